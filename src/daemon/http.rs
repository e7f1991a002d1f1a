//! The daemon's HTTP endpoint (`[http]`, off by default): the approved list for firewalls that
//! pull an external list, as plain text (`/roc-hosts.txt`) and JSON (`/roc-hosts.json`), each
//! with an `ETag` so that an unchanged list costs a 304; and `/metrics` in the Prometheus text
//! format. Read-only: GET and HEAD only.
//!
//! Whoever can reach the port can open connections: at most `MAX_CONNECTIONS` (64) are served at
//! once, each for at most `CONNECTION_TIME_LIMIT` (30 s), and a failing `accept` (out of
//! descriptors) pauses the loop and is logged once a minute, so that the passes keep the
//! descriptors and the journal its space.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A published document and its entity tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    pub body: String,
    pub etag: String,
}

impl Document {
    pub fn new(body: String) -> Document {
        // FNV-1a: stable across runs and versions, which is all an ETag needs.
        let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        Document { etag: format!("\"{hash:016x}\""), body }
    }
}

/// What the daemon counts, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Source → Unix time of its last good read.
    pub last_good_poll: BTreeMap<String, i64>,
    pub polls_failed: u64,
    pub hosts_in_force: usize,
    pub addresses: usize,
    /// Addresses DNS answers gave for hosts in force that were refused (internal ranges).
    pub dns_refused: usize,
    pub pending_plans: usize,
    /// (AMC number, service) → blocked requests seen.
    pub blocked: BTreeMap<(String, String), u64>,
    pub alerts_sent: u64,
    pub alerts_failed: u64,
    pub applies: u64,
    pub apply_seconds_total: f64,
    pub last_apply_seconds: f64,
}

impl Metrics {
    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let gauge = |w: &mut String, name: &str, help: &str, kind: &str| {
            writeln!(w, "# HELP rocsync_{name} {help}\n# TYPE rocsync_{name} {kind}").ok();
        };
        gauge(w, "last_good_poll_timestamp_seconds", "Unix time of the last good read of each annuaire source.", "gauge");
        for (source, at) in &self.last_good_poll {
            writeln!(w, "rocsync_last_good_poll_timestamp_seconds{{source=\"{}\"}} {at}", label(source)).ok();
        }
        for (name, help, kind, value) in [
            ("polls_failed_total", "Annuaire reads that failed.", "counter", self.polls_failed as f64),
            ("hosts_in_force", "Hosts allowed by the state in force.", "gauge", self.hosts_in_force as f64),
            ("addresses", "Addresses resolved for the hosts in force.", "gauge", self.addresses as f64),
            ("dns_refused_addresses", "Addresses that DNS answers gave for AMC hosts and that were refused (internal ranges).", "gauge", self.dns_refused as f64),
            ("pending_plans", "Plans waiting for approval.", "gauge", self.pending_plans as f64),
            ("alerts_sent_total", "Alerts sent.", "counter", self.alerts_sent as f64),
            ("alerts_failed_total", "Alert deliveries that failed (each is retried).", "counter", self.alerts_failed as f64),
            ("last_apply_duration_seconds", "How long the last apply took.", "gauge", self.last_apply_seconds),
        ] {
            gauge(w, name, help, kind);
            writeln!(w, "rocsync_{name} {value}").ok();
        }
        gauge(w, "apply_duration_seconds", "Time spent applying plans.", "summary");
        writeln!(w, "rocsync_apply_duration_seconds_sum {}\nrocsync_apply_duration_seconds_count {}", self.apply_seconds_total, self.applies).ok();
        gauge(w, "blocked_requests_total", "Blocked requests to AMC services seen in the logs.", "counter");
        for ((amc, service), n) in &self.blocked {
            writeln!(w, "rocsync_blocked_requests_total{{amc=\"{}\",service=\"{}\"}} {n}", label(amc), label(service)).ok();
        }
        out
    }
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// What the endpoint serves; the daemon replaces it after each apply.
#[derive(Debug, Default)]
pub struct Published {
    pub plain: Document,
    pub json: Document,
    pub metrics: Metrics,
    pub serve_metrics: bool,
}

pub type Shared = Arc<RwLock<Published>>;

/// At most this many connections are served at once. The next ones wait in the kernel's
/// listen backlog, where they hold none of the daemon's file descriptors: 10,000 idle
/// connections once took them all, and the passes failed with them.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request headers (a slow one holds a slot).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed after this long, whatever it is doing: a firewall pulls a list in
/// well under a second, and keep-alive must not let a few clients hold every slot.
pub(crate) const CONNECTION_TIME_LIMIT: Duration = Duration::from_secs(30);

/// Serves until `shutdown` completes.
pub async fn serve(listener: TcpListener, shared: Shared, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut gate = Gate::new("HTTP endpoint");
    while let Some((stream, _, permit)) = gate.accept(&listener, &mut shutdown).await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&request, &shared)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIME_LIMIT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("HTTP connection: {e}"),
                Err(_) => tracing::debug!("HTTP connection closed after {CONNECTION_TIME_LIMIT:?}."),
            }
            // The slot is free once the connection is closed (dropping it closes the socket).
            drop(permit);
        });
    }
}

/// The accept side of rocsync's servers (this endpoint, the console): at most
/// [`MAX_CONNECTIONS`] at once, a slot taken *before* `accept` so that connections over the cap
/// wait unaccepted (holding no descriptor), and after a failed `accept` a pause and a log line
/// at most once a minute ([`AcceptErrors`]).
pub(crate) struct Gate {
    what: &'static str,
    slots: Arc<Semaphore>,
    errors: AcceptErrors,
}

impl Gate {
    pub(crate) fn new(what: &'static str) -> Gate {
        Gate { what, slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)), errors: AcceptErrors::default() }
    }

    /// The next connection with its peer and its slot (dropped when the connection is done);
    /// `None` once `shutdown` completes.
    pub(crate) async fn accept(
        &mut self,
        listener: &TcpListener,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Option<(tokio::net::TcpStream, std::net::SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
        loop {
            let permit = tokio::select! {
                permit = self.slots.clone().acquire_owned() => permit.ok()?,
                () = shutdown.as_mut() => return None,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = shutdown.as_mut() => return None,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.errors.succeeded();
                    return Some((stream, peer, permit));
                }
                Err(e) => {
                    // Out of descriptors, `accept` fails at once and forever: without a pause
                    // the loop spins, and without a limit it logs the same line millions of times.
                    let (log, pause) = self.errors.failed(Instant::now());
                    match log {
                        Some(0) => tracing::warn!("{}: cannot accept a connection: {e}", self.what),
                        Some(suppressed) => tracing::warn!(
                            suppressed,
                            "{}: cannot accept a connection: {e} ({suppressed} more since the last such line, not logged)",
                            self.what
                        ),
                        None => {}
                    }
                    drop(permit);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = shutdown.as_mut() => return None,
                    }
                }
            }
        }
    }
}

/// The first pause after a failed `accept`; it doubles while `accept` keeps failing.
const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(100);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this period about failed `accept`s.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the accept loop does after errors: pauses that double from 100 ms to 1 s while
/// `accept` fails, and a log line at most once a minute, which tells how many it left out.
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    /// Failures since the last success.
    in_a_row: u32,
    /// When a failure was last logged.
    logged_at: Option<Instant>,
    /// Failures since then that were not logged.
    suppressed: u64,
}

impl AcceptErrors {
    /// Counts a failure at `now`: `Some(n)` when it is to be logged, `n` being how many were
    /// left out since the last line; and how long to pause before the next `accept`.
    pub(crate) fn failed(&mut self, now: Instant) -> (Option<u64>, Duration) {
        self.in_a_row = self.in_a_row.saturating_add(1);
        let doublings = (self.in_a_row - 1).min(4);
        let pause = ACCEPT_PAUSE_FIRST.saturating_mul(1 << doublings).min(ACCEPT_PAUSE_MAX);
        let log = match self.logged_at {
            Some(at) if now.saturating_duration_since(at) < ACCEPT_LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.logged_at = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        };
        (log, pause)
    }

    pub(crate) fn succeeded(&mut self) {
        self.in_a_row = 0;
    }
}

fn answer(request: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
    }
    let Ok(published) = shared.read() else { return plain(StatusCode::INTERNAL_SERVER_ERROR, "unavailable\n") };
    let (doc, content_type) = match request.uri().path() {
        "/roc-hosts.txt" => (published.plain.clone(), "text/plain; charset=utf-8"),
        "/roc-hosts.json" => (published.json.clone(), "application/json"),
        "/metrics" if published.serve_metrics => {
            (Document { body: published.metrics.render(), etag: String::new() }, "text/plain; version=0.0.4; charset=utf-8")
        }
        _ => return plain(StatusCode::NOT_FOUND, "not found: /roc-hosts.txt, /roc-hosts.json, /metrics\n"),
    };
    drop(published);
    let not_modified = !doc.etag.is_empty()
        && request.headers().get_all(IF_NONE_MATCH).iter().any(|v| {
            v.to_str().is_ok_and(|v| v.split(',').any(|tag| tag.trim() == doc.etag || tag.trim() == "*"))
        });
    let head = request.method() == Method::HEAD;
    let (status, body) = match (not_modified, head) {
        (true, _) => (StatusCode::NOT_MODIFIED, Bytes::new()),
        (false, true) => (StatusCode::OK, Bytes::new()),
        (false, false) => (StatusCode::OK, Bytes::from(doc.body)),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let (false, Ok(tag)) = (doc.etag.is_empty(), HeaderValue::from_str(&doc.etag)) {
        response.headers_mut().insert(ETAG, tag);
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Out of descriptors, the accept loop spun and wrote "HTTP endpoint: Too many open
    /// files" some 21 million times.
    #[test]
    fn accept_errors_pause_and_are_logged_once_a_minute() {
        let mut errors = AcceptErrors::default();
        let t0 = Instant::now();
        let pauses: Vec<u128> = (0..7).map(|i| errors.failed(t0 + Duration::from_millis(i)).1.as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000, 1000]);
        errors.succeeded();
        assert_eq!(errors.failed(t0 + Duration::from_secs(1)).1, ACCEPT_PAUSE_FIRST, "a success starts the pauses again");

        let mut errors = AcceptErrors::default();
        let mut lines = Vec::new();
        // One failure a millisecond for three minutes.
        for ms in 0..180_000u64 {
            if let (Some(suppressed), _) = errors.failed(t0 + Duration::from_millis(ms)) {
                lines.push((ms, suppressed));
            }
        }
        assert_eq!(lines, [(0, 0), (60_000, 59_999), (120_000, 59_999)]);
        assert!(errors.failed(t0 + Duration::from_secs(3600)).0.is_some());
        let mut errors = AcceptErrors { in_a_row: u32::MAX, ..AcceptErrors::default() };
        assert_eq!(errors.failed(t0).1, ACCEPT_PAUSE_MAX);
    }

    #[test]
    fn etags_follow_the_content() {
        assert_eq!(Document::new("a\n".into()).etag, Document::new("a\n".into()).etag);
        assert_ne!(Document::new("a\n".into()).etag, Document::new("b\n".into()).etag);
        assert!(Document::new(String::new()).etag.starts_with('"'));
    }

    #[test]
    fn metrics_in_the_prometheus_text_format() {
        let mut m = Metrics { hosts_in_force: 12, applies: 2, apply_seconds_total: 0.5, ..Metrics::default() };
        m.last_good_poll.insert("file:a \"b\".json".into(), 1_700_000_000);
        m.blocked.insert(("123456789".into(), "IDB".into()), 100);
        let text = m.render();
        assert!(text.contains("# TYPE rocsync_hosts_in_force gauge\nrocsync_hosts_in_force 12\n"), "{text}");
        assert!(text.contains("rocsync_last_good_poll_timestamp_seconds{source=\"file:a \\\"b\\\".json\"} 1700000000"), "{text}");
        assert!(text.contains("rocsync_blocked_requests_total{amc=\"123456789\",service=\"IDB\"} 100"), "{text}");
        assert!(text.contains("rocsync_apply_duration_seconds_count 2"), "{text}");
        // Every sample line is `name{labels} value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
