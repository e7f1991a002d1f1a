//! The review console (`[console]`, off by default), served by `rocsync run`: the RSSI reads
//! each plan grouped by AMC and approves or rejects it with a comment; the helpdesk looks an AMC
//! up and sees whether it is open, since when, what is blocked and what waits.
//!
//! - [`auth`]: roles, Argon2id passwords, sessions, CSRF tokens, login throttling (pure
//!   decisions, unit-tested).
//! - `pages`: the request handlers; `views` and `labels`: what each page shows, in French or
//!   English (the alerts' `language`), rendered by askama templates under
//!   `templates/console/` that escape every value.
//!
//! A decision is recorded exactly as `rocsync approve` records it while the daemon runs
//! ([`Engine::decide`] without applying), with the account's name, role and address as the
//! actor; the daemon's worker applies it at once. Everything but `/login` and the style sheet
//! needs a session; every response carries a Content-Security-Policy without script,
//! `frame-ancestors 'none'`, `Referrer-Policy: no-referrer` and, for pages, `Cache-Control:
//! no-store`. Connections are capped as for the HTTP endpoint; over TLS (rustls, ring) unless
//! the console listens on loopback.

pub mod auth;
mod labels;
mod openings;
mod pages;
mod views;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::alerts::Language;
use crate::config::Config;
use crate::daemon::http::{CONNECTION_TIME_LIMIT, HEADER_TIMEOUT};
use crate::engine::{Engine, EngineError};

/// How the console knows who is asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Its own accounts (`rocsync user add`), a password and a session cookie.
    #[default]
    Local,
    /// A reverse proxy that authenticated the person (the hospital's SSO) names them in a
    /// header; taken only from `trusted_proxies`, and only for a local account of that name.
    Proxy,
}

/// The certificate chain and key the console serves over TLS (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[console]`, checked and typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub listen: SocketAddr,
    /// Plain HTTP without: only on a loopback address (the configuration says so).
    pub tls: Option<TlsFiles>,
    /// The console's address as people reach it, without a trailing `/`: links in mails.
    pub public_url: Option<String>,
    pub session_idle: Duration,
    pub session_max: Duration,
    pub auth: AuthMode,
    pub proxy_user_header: HeaderName,
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ConsoleSettings {
    /// The page of plan `id`, when the console's public address is known.
    pub fn plan_link(&self, id: i64) -> Option<String> {
        self.public_url.as_ref().map(|url| format!("{url}/plans/{id}"))
    }
}

/// The rustls configuration for `files`: TLS 1.3 or 1.2 with ring, HTTP/1.1. The message says
/// which file is wrong.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |path: &PathBuf| crate::sources::read_small(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let pem = read(&files.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(format!("{} holds no certificate in PEM form", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|_| format!("{} holds no unencrypted private key in PEM form", files.key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate {} and the key {} cannot be used together: {e}", files.cert.display(), files.key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What every request handler shares.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ConsoleSettings,
    /// The console's own connection to the store (and the configuration it reads pages with).
    engine: Mutex<Engine>,
    lang: Language,
    /// Password checks at once: each holds 19 MiB for a few tens of milliseconds.
    hashing: Semaphore,
    /// Asks the daemon to apply approved plans now rather than at its next tick.
    wake: Box<dyn Fn() + Send + Sync>,
}

impl Console {
    /// Opens the console's connection to the store. `wake` tells the daemon that a plan was
    /// approved.
    pub fn open(config: Config, settings: ConsoleSettings, wake: Box<dyn Fn() + Send + Sync>) -> Result<Console, EngineError> {
        let lang = config.alerts.language.clone();
        let engine = Engine::open(config)?;
        let inner = Inner { settings, engine: Mutex::new(engine), lang, hashing: Semaphore::new(2), wake };
        Ok(Console { inner: Arc::new(inner) })
    }

    /// The session cookie's name: with the `__Host-` prefix over TLS, so that the browser keeps
    /// it `Secure`, for this host only and for every path.
    fn cookie_name(&self) -> &'static str {
        if self.inner.settings.tls.is_some() { "__Host-rocsync_session" } else { "rocsync_session" }
    }

    /// Runs `f` on the console's engine on a blocking thread (SQLite, hashing).
    async fn blocking<T, F>(&self, f: F) -> Result<T, pages::Failure>
    where
        T: Send + 'static,
        F: FnOnce(&mut Engine) -> Result<T, pages::Failure> + Send + 'static,
    {
        let inner = self.inner.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut engine = inner.engine.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut *engine)
        });
        match task.await {
            Ok(result) => result,
            Err(e) => Err(pages::Failure::Internal(format!("a console task failed: {e}"))),
        }
    }
}

/// The Content-Security-Policy of every response: no script at all, styles from the console's
/// own style sheet only, forms posted to the console only, never framed.
const CSP: &str = "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest request body: a decision's form with its comment.
const MAX_BODY: usize = 16 * 1024;

/// Every route, with the security headers on every response.
fn router(console: Console) -> Router {
    Router::new()
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/", get(pages::dashboard))
        .route("/plans", get(pages::plans))
        .route("/plans/{id}", get(pages::plan))
        .route("/plans/{id}/approve", post(pages::approve))
        .route("/plans/{id}/reject", post(pages::reject))
        .route("/rollback", post(pages::rollback))
        .route("/amc", get(pages::amc))
        .route("/notifications", get(pages::notifications))
        .route("/alerts", get(pages::alerts))
        .route("/audit", get(pages::audit))
        .route("/openings", get(pages::openings))
        .route("/static/console.css", get(pages::stylesheet))
        .fallback(pages::not_found)
        .with_state(console)
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
}

/// Serves the console on `listener` (over TLS with `tls`) until `shutdown` completes. At most
/// [`crate::daemon::http::MAX_CONNECTIONS`] connections at once, each for at most [`CONNECTION_TIME_LIMIT`], a TLS
/// handshake within [`HEADER_TIMEOUT`]; `accept` errors pause the loop and are logged once a
/// minute, as for the HTTP endpoint.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    console: Console,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let app = router(console);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut gate = crate::daemon::http::Gate::new("Console");
    while let Some((stream, peer, permit)) = gate.accept(&listener, &mut shutdown).await {
        let (app, acceptor) = (app.clone(), acceptor.clone());
        tokio::spawn(async move {
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let served = async {
                match acceptor {
                    None => serve_connection(stream, app, peer).await,
                    Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_connection(tls, app, peer).await,
                        Ok(Err(e)) => tracing::debug!(peer = %peer, "Console: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(peer = %peer, "Console: TLS handshake not done in {HEADER_TIMEOUT:?}."),
                    },
                }
            };
            if tokio::time::timeout(CONNECTION_TIME_LIMIT, served).await.is_err() {
                tracing::debug!(peer = %peer, "Console connection closed after {CONNECTION_TIME_LIMIT:?}.");
            }
            drop(permit);
        });
    }
}

/// One connection: HTTP/1.1 through hyper, each request handed to the router with the peer's
/// address (the handlers' `ConnectInfo`).
async fn serve_connection<I>(io: I, app: Router, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let inner = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        hyper::service::Service::call(&inner, request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = connection.await {
        tracing::debug!(peer = %peer, "Console connection: {e}");
    }
}

/// Whether `ip` is one of `proxies` (addresses or networks).
fn trusted(proxies: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_proxies_are_trusted() {
        let proxies: Vec<ipnet::IpNet> = vec!["127.0.0.1/32".parse().unwrap(), "198.18.0.0/24".parse().unwrap()];
        assert!(trusted(&proxies, "127.0.0.1".parse().unwrap()));
        assert!(trusted(&proxies, "::ffff:127.0.0.1".parse().unwrap()), "an IPv4 peer on an IPv6 socket");
        assert!(trusted(&proxies, "198.18.0.77".parse().unwrap()));
        assert!(!trusted(&proxies, "198.18.1.1".parse().unwrap()));
        assert!(!trusted(&[], "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn plan_links_follow_the_public_address() {
        let settings = ConsoleSettings {
            listen: "127.0.0.1:8443".parse().unwrap(),
            tls: None,
            public_url: Some("https://rocsync.hopital.test".into()),
            session_idle: Duration::from_secs(1800),
            session_max: Duration::from_secs(43200),
            auth: AuthMode::Local,
            proxy_user_header: HeaderName::from_static("x-remote-user"),
            trusted_proxies: Vec::new(),
        };
        assert_eq!(settings.plan_link(7).as_deref(), Some("https://rocsync.hopital.test/plans/7"));
        assert_eq!(ConsoleSettings { public_url: None, ..settings }.plan_link(7), None);
    }
}
