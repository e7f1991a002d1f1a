//! The DSI's notification mailbox over IMAP (async-imap over tokio-rustls).
//!
//! rocsync reads every message of the watched folder, and once it has recorded one, moves it
//! to the processed folder (flagged `\Flagged` for a person when it was not used): what is in
//! the watched folder is what is still to read. A crash between recording and moving is
//! harmless, since a message is recorded once by its Message-ID. IDLE, where the server offers
//! it, says at once when a message arrives. Sizes are asked first: a message over the limit is
//! never fetched, only recorded as too large.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use futures_util::TryStreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use secrecy::{ExposeSecret as _, SecretString};

use crate::sources::mail::Incoming;
use crate::tls::TlsMode;

/// Where and how to read the mailbox (`[notifications.imap]`).
#[derive(Debug, Clone)]
pub struct ImapSettings {
    pub server: String,
    pub port: u16,
    pub security: TlsMode,
    pub username: String,
    /// Its `Debug` prints `[REDACTED]`; exposed only to log in.
    pub password: SecretString,
    pub folder: String,
    pub processed_folder: String,
    /// CAs for the mail server's certificate; the system's when `None`.
    pub ca_bundle: Option<PathBuf>,
    pub timeout: Duration,
}

/// Why the mailbox could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect to the IMAP server {server}")]
    Connect {
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with the IMAP server {server} failed")]
    Tls {
        server: String,
        #[source]
        source: std::io::Error,
    },
    /// The CA bundle for the mail server cannot be used, or no CA is found.
    #[error("cannot trust the IMAP server's certificate")]
    Trust(#[source] crate::sources::https::TlsSetupError),
    #[error("the IMAP server {server} refused the login of `{username}`")]
    Login {
        server: String,
        username: String,
        #[source]
        source: async_imap::error::Error,
    },
    #[error("IMAP {what} failed")]
    Command {
        what: String,
        #[source]
        source: async_imap::error::Error,
    },
    #[error("the IMAP server {server} did not answer within {after:?}")]
    Timeout { server: String, after: Duration },
}

/// A connection, encrypted or not (only for a server on loopback).
pub enum ImapStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl fmt::Debug for ImapStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImapStream::Plain(_) => "ImapStream::Plain",
            ImapStream::Tls(_) => "ImapStream::Tls",
        })
    }
}

impl AsyncRead for ImapStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ImapStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ImapStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ImapStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ImapStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

pub type Session = async_imap::Session<ImapStream>;

/// A message of the watched folder: its bytes, or its size when that is over the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub uid: u32,
    pub message: Incoming,
}

fn command(what: &str) -> impl FnOnce(async_imap::error::Error) -> ImapError + '_ {
    move |source| ImapError::Command { what: what.to_owned(), source }
}

async fn tls_wrap(settings: &ImapSettings, tcp: TcpStream) -> Result<ImapStream, ImapError> {
    // The mail server's CA bundle when given, the system's otherwise.
    let trust = crate::sources::https::TlsSettings {
        ca_bundle: settings.ca_bundle.clone(),
        use_system_roots: settings.ca_bundle.is_none(),
        ..Default::default()
    };
    let roots = crate::sources::https::load_roots(&trust).map_err(ImapError::Trust)?;
    let config = crate::sources::https::client_config(roots).with_no_client_auth();
    let name = ServerName::try_from(settings.server.clone())
        .map_err(|e| ImapError::Tls { server: settings.server.clone(), source: std::io::Error::other(e) })?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|source| ImapError::Tls { server: settings.server.clone(), source })?;
    Ok(ImapStream::Tls(Box::new(tls)))
}

/// Connects, logs in and selects the watched folder; also says how many messages it holds.
pub async fn connect(settings: &ImapSettings) -> Result<(Session, u32), ImapError> {
    let server = format!("{}:{}", settings.server, settings.port);
    let work = async {
        let tcp = TcpStream::connect((settings.server.as_str(), settings.port))
            .await
            .map_err(|source| ImapError::Connect { server: server.clone(), source })?;
        let stream = match settings.security {
            TlsMode::Tls => tls_wrap(settings, tcp).await?,
            TlsMode::None => ImapStream::Plain(tcp),
            TlsMode::Starttls => {
                let mut client = async_imap::Client::new(tcp);
                client.read_response().await.map_err(|source| ImapError::Connect { server: server.clone(), source })?;
                client.run_command_and_check_ok("STARTTLS", None).await.map_err(command("STARTTLS"))?;
                tls_wrap(settings, client.into_inner()).await?
            }
        };
        let mut client = async_imap::Client::new(stream);
        if settings.security != TlsMode::Starttls {
            client.read_response().await.map_err(|source| ImapError::Connect { server: server.clone(), source })?;
        }
        let mut session = client.login(&settings.username, settings.password.expose_secret()).await.map_err(|(source, _)| ImapError::Login {
            server: server.clone(),
            username: settings.username.clone(),
            source,
        })?;
        let mailbox = session.select(&settings.folder).await.map_err(command("SELECT"))?;
        Ok((session, mailbox.exists))
    };
    tokio::time::timeout(settings.timeout, work).await.map_err(|_| ImapError::Timeout { server, after: settings.timeout })?
}

/// Every message of the selected folder, oldest first. The sizes come first (`RFC822.SIZE`):
/// only the messages within `max_bytes` are fetched, the others are listed by their size.
pub async fn fetch_all(session: &mut Session, max_bytes: u64) -> Result<Vec<Fetched>, ImapError> {
    let uids = session.uid_search("ALL").await.map_err(command("UID SEARCH"))?;
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let mut sorted: Vec<u32> = uids.into_iter().collect();
    sorted.sort_unstable();
    let stream = session.uid_fetch(uid_set(&sorted), "(UID RFC822.SIZE)").await.map_err(command("UID FETCH"))?;
    let sizes: Vec<_> = stream.try_collect().await.map_err(command("UID FETCH"))?;
    let sizes: Vec<(u32, u64)> = sizes.iter().filter_map(|f| Some((f.uid?, u64::from(f.size?)))).collect();
    let (small, large) = split_by_size(&sorted, &sizes, max_bytes);
    let mut out: Vec<Fetched> =
        large.into_iter().map(|(uid, size)| Fetched { uid, message: Incoming::TooLarge { size } }).collect();
    if !small.is_empty() {
        let stream = session.uid_fetch(uid_set(&small), "(UID BODY.PEEK[])").await.map_err(command("UID FETCH"))?;
        let fetches: Vec<_> = stream.try_collect().await.map_err(command("UID FETCH"))?;
        out.extend(fetches.iter().filter_map(|f| {
            let uid = f.uid?;
            // Only what was asked for: the server may add FETCH responses of its own.
            small.binary_search(&uid).ok()?;
            Some(Fetched { uid, message: Incoming::Bytes(f.body()?.to_vec()) })
        }));
    }
    out.sort_by_key(|f| f.uid);
    out.dedup_by_key(|f| f.uid);
    Ok(out)
}

/// `1,2,5`: a UID set for a command.
fn uid_set(uids: &[u32]) -> String {
    uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The UIDs to fetch (sorted, size known and within `max_bytes`) and those to leave unread with
/// their size. A UID the server gave no size for is left where it is, with a warning: it is
/// neither read blind nor lost.
fn split_by_size(uids: &[u32], sizes: &[(u32, u64)], max_bytes: u64) -> (Vec<u32>, Vec<(u32, u64)>) {
    let sizes: std::collections::HashMap<u32, u64> = sizes.iter().copied().collect();
    let mut small = Vec::new();
    let mut large = Vec::new();
    for &uid in uids {
        match sizes.get(&uid) {
            Some(&size) if size > max_bytes => large.push((uid, size)),
            Some(_) => small.push(uid),
            None => tracing::warn!(uid, "The IMAP server gave no size for this message; it stays in the folder."),
        }
    }
    (small, large)
}

/// Moves a recorded message to the processed folder, flagged for a person unless `used`.
pub async fn move_processed(session: &mut Session, uid: u32, used: bool, folder: &str) -> Result<(), ImapError> {
    let flags = if used { "+FLAGS (\\Seen)" } else { "+FLAGS (\\Seen \\Flagged)" };
    let _: Vec<_> = session
        .uid_store(uid.to_string(), flags)
        .await
        .map_err(command("UID STORE"))?
        .try_collect()
        .await
        .map_err(command("UID STORE"))?;
    if let Err(first) = session.uid_mv(uid.to_string(), folder).await {
        // The folder may not exist yet: create it once and try again.
        session.create(folder).await.map_err(|_| ImapError::Command { what: format!("MOVE to {folder}"), source: first })?;
        session.uid_mv(uid.to_string(), folder).await.map_err(command("UID MOVE"))?;
    }
    Ok(())
}

/// Wakes `wake` when a message arrives in the watched folder: by IDLE where the server offers
/// it (and `use_idle`), otherwise every `poll_interval`. Reconnects after an error, backing off
/// up to five minutes. Returns when `shutdown` completes.
pub async fn watch(
    settings: &ImapSettings,
    use_idle: bool,
    poll_interval: Duration,
    wake: Arc<tokio::sync::Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_secs(5);
    loop {
        let watched = async {
            let (mut session, waiting) = connect(settings).await?;
            // What arrived while rocsync was away, or while it was logging in, IDLE will not
            // report: the folder is read once now.
            if waiting > 0 {
                wake.notify_one();
            }
            let has_idle = session.capabilities().await.map_err(command("CAPABILITY"))?.has_str("IDLE");
            if !(use_idle && has_idle) {
                tracing::info!(server = %settings.server, "Checking the mailbox every {poll_interval:?} (no IDLE).");
                // The folder is looked at, and the annuaire poll woken only when a message is
                // there: the national service is not polled at the mailbox's pace.
                loop {
                    tokio::time::sleep(poll_interval).await;
                    let mailbox = session.select(&settings.folder).await.map_err(command("SELECT"))?;
                    if mailbox.exists > 0 {
                        tracing::debug!(server = %settings.server, waiting = mailbox.exists, "A message is in the mailbox.");
                        wake.notify_one();
                    }
                }
            }
            loop {
                // Servers may drop an IDLE after 30 minutes; renew it before.
                let (s, arrived) = idle(session, Duration::from_secs(25 * 60)).await?;
                session = s;
                if arrived {
                    tracing::debug!(server = %settings.server, "IDLE: a message arrived.");
                    wake.notify_one();
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), ImapError>(())
        };
        tokio::select! {
            result = watched => {
                if let Err(e) = result {
                    tracing::warn!(server = %settings.server, "Mailbox watch failed, retrying in {backoff:?}: {}", crate::error_chain(&e));
                }
            }
            () = &mut shutdown => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(Duration::from_secs(300)),
            () = &mut shutdown => return,
        }
    }
}

/// Waits in IDLE until the server reports new data or `timeout` passes; `true` when something
/// arrived. The session comes back out of IDLE.
pub async fn idle(session: Session, timeout: Duration) -> Result<(Session, bool), ImapError> {
    let mut handle = session.idle();
    handle.init().await.map_err(command("IDLE"))?;
    let (wait, _stop) = handle.wait_with_timeout(timeout);
    let response = wait.await.map_err(command("IDLE"))?;
    let session = handle.done().await.map_err(command("DONE"))?;
    Ok((session, matches!(response, IdleResponse::NewData(_))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_messages_within_the_limit_are_fetched() {
        // 7 is exactly the limit; 11 came without a size.
        let (small, large) = split_by_size(&[3, 5, 7, 9, 11], &[(9, 4096), (3, 10), (5, 50_000), (7, 10_000)], 10_000);
        assert_eq!(small, [3, 7, 9]);
        assert_eq!(large, [(5, 50_000)]);
        assert_eq!(uid_set(&small), "3,7,9");
    }
}
