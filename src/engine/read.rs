//! Reading the annuaire: a file, or the web service with its client certificate and its ETag.
//! Every read is recorded, good or bad; the last good answer is kept.

use std::path::Path;

use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

use crate::catalogue::{Catalogue, State, desired};
use crate::config::AnnuaireSource;
use crate::sources::annuaire::Answer;
use crate::sources::https::{AnnuaireClient, CertInfo, FetchError, Fetched, load_identity};
use crate::sources::{SourceError, read_limited};
use crate::store::{CachedAnswer, SourceRead};

use super::{Engine, EngineError, now};

/// What a source read gave.
#[derive(Debug, Clone)]
pub struct Read {
    pub source: String,
    pub answer: Answer,
    pub desired: State,
    /// For the web service: what the request gave.
    pub fetch: Option<FetchInfo>,
    /// The answer as read.
    pub body: Vec<u8>,
}

/// One request to the web service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchInfo {
    /// 200, or 304 when the cached answer was used.
    pub status: u16,
    pub bytes: usize,
    pub etag: Option<String>,
    pub elapsed: std::time::Duration,
}

/// An answer's bytes before parsing.
struct Body {
    bytes: Vec<u8>,
    content_type: Option<String>,
    etag: Option<String>,
    fetch: Option<FetchInfo>,
}

impl Engine {
    /// Reads the configured source (or `file`), and records the read, good or bad.
    pub fn read_source(&mut self, file: Option<&Path>) -> Result<Read, EngineError> {
        self.read_source_with(file, false)
    }

    /// [`Engine::read_source`]; with `force`, the web service's answer is fetched whole even if
    /// its ETag says it has not changed.
    pub fn read_source_with(&mut self, file: Option<&Path>, force: bool) -> Result<Read, EngineError> {
        let at = now();
        let (source, fetched) = match (file, &self.config.source) {
            (Some(f), _) => (format!("file:{}", f.display()), self.read_file(f)),
            (None, AnnuaireSource::File(p)) => {
                let p = p.clone();
                (format!("file:{}", p.display()), self.read_file(&p))
            }
            (None, AnnuaireSource::Https(u)) => (u.to_string(), self.fetch_https(force)),
        };
        let parsed = fetched.and_then(|body| {
            let answer = crate::sources::annuaire::parse(&body.bytes, body.content_type.as_deref())
                .map_err(|e| EngineError::Source(SourceError::Answer { input: source.clone(), source: e }))?;
            Ok((body, answer))
        });
        let (body, answer) = match parsed {
            Ok(ok) => ok,
            Err(e) => {
                let error = crate::error_chain(&e);
                warn!(source = %source, "Source error, keeping what is in force: {error}");
                let read = SourceRead { at, source, ok: false, serial: None, hosts: None, rejected: None, error: Some(error) };
                self.store.record_source_read(&read)?;
                return Err(e);
            }
        };
        for w in &answer.warnings {
            warn!(source = %source, "{w}");
        }
        for amc in &answer.held {
            warn!(source = %source, amc = %amc, "AMC rejected whole; what is in force for it stays.");
        }
        for r in &answer.rejected {
            warn!(source = %source, place = %r.place, amc = r.amc.as_deref().unwrap_or("-"), value = %r.value, "Rejected value: {}.", r.reason);
        }
        // The last good answer is kept: for a 304, and for `inspect log`'s catalogue.
        if body.fetch.as_ref().is_none_or(|f| f.status == 200) {
            let cached = CachedAnswer { fetched_at: at.clone(), etag: body.etag.clone(), content_type: body.content_type.clone(), body: body.bytes.clone() };
            self.store.cache_answer(&source, &cached)?;
        }
        let desired = desired(&Catalogue::from_answer(&answer), &self.config.policy);
        self.store.record_source_read(&SourceRead {
            at,
            source: source.clone(),
            ok: true,
            serial: answer.serial,
            hosts: Some(desired.len()),
            rejected: Some(answer.rejected.len()),
            error: None,
        })?;
        info!(source = %source, serial = ?answer.serial, hosts = desired.len(), rejected = answer.rejected.len(), "Read the annuaire.");
        Ok(Read { source, answer, desired, fetch: body.fetch, body: body.bytes })
    }

    fn read_file(&self, path: &Path) -> Result<Body, EngineError> {
        let bytes = read_limited(path, self.config.max_body_bytes)?;
        Ok(Body { bytes, content_type: None, etag: None, fetch: None })
    }

    /// One request to the web service; on 304, the last good answer from the store.
    fn fetch_https(&mut self, force: bool) -> Result<Body, EngineError> {
        if self.client.is_none() {
            let settings = self.config.https.clone().expect("an https source has its settings");
            self.client = Some(AnnuaireClient::new(settings)?);
        }
        let client = self.client.as_ref().expect("just built");
        let identity = client.identity.clone();
        let url = client.url().to_string();
        self.watch_certificate(&identity)?;
        let cached = if force { None } else { self.store.cached_answer(&url)? };
        let etag = cached.as_ref().and_then(|c| c.etag.clone());
        let runtime = self.io()?;
        let started = std::time::Instant::now();
        let client = self.client.as_ref().expect("just built");
        let fetched = runtime.block_on(client.fetch(etag.as_deref()))?;
        let elapsed = started.elapsed();
        match fetched {
            Fetched::NotModified => {
                // A 304 answers the ETag rocsync sent; a server that sends one unasked gives
                // nothing to read.
                let Some(cached) = cached else {
                    return Err(EngineError::Fetch(FetchError::Http {
                        url,
                        detail: "answered 304 Not Modified to a request without an ETag: there is no answer to read".into(),
                    }));
                };
                info!(url = %url, "Unchanged since {} (304).", cached.fetched_at);
                let fetch = FetchInfo { status: 304, bytes: 0, etag, elapsed };
                Ok(Body { bytes: cached.body, content_type: cached.content_type, etag: cached.etag, fetch: Some(fetch) })
            }
            Fetched::Body { body, content_type, etag } => {
                let fetch = FetchInfo { status: 200, bytes: body.len(), etag: etag.clone(), elapsed };
                Ok(Body { bytes: body, content_type, etag, fetch: Some(fetch) })
            }
        }
    }

    /// Warns, and audits once a day, when the hospital's certificate is near its end: ROC stops
    /// the day it expires.
    fn watch_certificate(&mut self, info: &CertInfo) -> Result<(), EngineError> {
        let now_t = crate::clock::now_utc();
        let days = info.days_left(now_t);
        let window = (self.config.cert_expiry_warning.as_secs() / 86_400) as i64;
        let (action, message) = if now_t > info.not_after {
            ("cert.expired", format!("the client certificate has expired: {info}"))
        } else if days <= window {
            ("cert.expiring", format!("the client certificate expires in {days} day(s): {info}"))
        } else {
            return Ok(());
        };
        warn!(subject = %info.subject, not_after = %info.not_after.date(), "{message}");
        let day_ago = (now_t - time::Duration::days(1)).replace_nanosecond(0).unwrap_or(now_t).format(&Rfc3339).unwrap_or_default();
        if !self.store.audited_since(action, &day_ago)? {
            self.store.audit("rocsync", action, None, &message, &now())?;
        }
        Ok(())
    }

    /// The client certificate the configuration names, read from disk (no network).
    pub fn client_certificate(&self) -> Option<Result<CertInfo, String>> {
        let settings = self.config.https.as_ref()?;
        Some(load_identity(&settings.tls).map(|id| id.info).map_err(|e| crate::error_chain(&e)))
    }
}
