//! One reconcile pass and the plan commands, on top of the pure core, the store and the sinks.
//!
//! [`Engine::once`] reads top to bottom: read the source → compute the desired state → diff it
//! against what is in force → store the plans → apply those that need no approval → repair
//! outputs that drifted. A source error stops the pass before any plan is made: what is in
//! force stays in force.

use std::fs::File;
use std::fs::TryLockError;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{info, info_span, warn};

use std::collections::{BTreeMap, BTreeSet};

use crate::amc::AmcNumber;
use crate::catalogue::{AmcUse, Catalogue, DOMAIN_PORT, Entry, Origin, State, desired};
use crate::host::Host;
use crate::sources::{imap, mail};
use crate::sources::maildir::Maildir;
use crate::config::{AnnuaireSource, Config};
use crate::plan::{Context, HostDiff, Plan, Proposal, Status, propose};
use crate::resolve::{BookChange, DnsResolver, ResolverError, now_millis};
use crate::sinks::files::FileSink;
use crate::sinks::nftables::{NftablesSink, element_commands, wanted};
use crate::sinks::{Resolved, Sink, SinkError};
use crate::sources::annuaire::Answer;
use crate::sources::https::{AnnuaireClient, CertInfo, FetchError, Fetched, TlsSetupError, load_identity};
use crate::sources::{SourceError, read_limited};
use crate::store::{Applied, CachedAnswer, Decision, NotificationRecord, SourceRead, Store, StoreError};
use crate::sinks::readback::{self, ReadBack, ReadError};

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The source could not be read or understood; nothing was planned.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The web service could not be reached or did not answer well; nothing was planned.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The client certificate or the CA bundle cannot be used.
    #[error("cannot set up TLS for the annuaire")]
    TlsSetup(#[from] TlsSetupError),
    /// The Maildir cannot be read, or a message not moved.
    #[error("Maildir {}", path.display())]
    Maildir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The notification mailbox cannot be read; nothing was lost, the messages stay there.
    #[error(transparent)]
    Imap(#[from] imap::ImapError),
    /// A rollback cannot be made.
    #[error("cannot roll back: {0}")]
    Rollback(String),
    /// An older applied state was asked for and the store no longer keeps it whole.
    #[error("the state plan {0} applied is no longer kept (store.keep_applied_states)")]
    StateNotKept(i64),
    /// The resolver cannot be set up (a bad server address).
    #[error(transparent)]
    Resolver(#[from] ResolverError),
    /// The process's I/O runtime cannot start.
    #[error("cannot start the I/O runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A sink failed; the plan stays open and what was in force stays in force.
    #[error("plan {plan}: the {sink} sink failed; nothing was recorded as applied (retry with `rocsync apply {plan}`)")]
    Sink {
        plan: i64,
        sink: String,
        #[source]
        source: SinkError,
    },
    /// The apply lock's file cannot be opened or locked.
    #[error("cannot take the apply lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A plan was approved while the plan it is computed on top of still waits for approval.
    #[error("plan {plan} applies on top of plan {base}, which still waits for approval: approve plan {base} first (rocsync plan show {base})")]
    BaseWaits { plan: i64, base: i64 },
    /// Another rocsync held the apply lock longer than [`LOCK_WAIT`].
    #[error(
        "{holder} held the apply lock {} for more than {waited} s; nothing was planned or applied: try again once it is done",
        path.display()
    )]
    LockTimeout { path: PathBuf, holder: String, waited: u64 },
    /// The store has never held a plan while outputs that rocsync wrote exist: its memory was
    /// lost. Planning from the empty state would close what they allow, unapproved.
    #[error(
        "the state store in {} holds no plan, but outputs that rocsync wrote exist: {found}. rocsync does not plan from an empty state: \
         that would close, without approval, what those files allow. If the store was lost, record what the outputs hold as the state \
         in force with `rocsync recover --by NAME`, then run `rocsync once`: what it closes waits for approval",
        state_dir.display()
    )]
    StoreLost { state_dir: PathBuf, found: String },
    /// `rocsync recover` found nothing to recover from.
    #[error("nothing to recover: {0}")]
    NothingToRecover(String),
    /// An output that exists cannot be read back.
    #[error(transparent)]
    ReadBack(#[from] ReadError),
}

/// How long a command waits for another rocsync's pass or apply before giving up.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);

/// The file the apply lock is held on, in the state directory.
const APPLY_LOCK: &str = "apply.lock";

/// The current time, as the store and the outputs write it (the clock's, kept here for the
/// paths that name it).
pub use crate::clock::now;

/// For each proposal, the open plan that holds exactly its changes, decided the same way for
/// the same reasons: that plan keeps its number, and the review the RSSI was asked for, whatever
/// else a newer read changed (a notification-only plan is not rebuilt and mailed again at every
/// annuaire change). Its changes name the state before them, so it means the same on the new
/// chain as on the old.
fn unchanged_plans(open: &[Plan], proposals: &[Proposal]) -> Vec<Option<i64>> {
    let mut taken: BTreeSet<i64> = BTreeSet::new();
    proposals
        .iter()
        .map(|q| {
            let same = open.iter().find(|p| {
                !taken.contains(&p.id) && p.diff == q.diff && p.needs_approval == q.needs_approval && p.reasons == q.reasons
            });
            let id = same.map(|p| p.id);
            taken.extend(id);
            id
        })
        .collect()
}

/// The open plans in the order of `kept`, when they are all of them, all kept, and already
/// chained on top of plan `base` in that order: nothing to store.
fn still_holding(open: &[Plan], kept: &[Option<i64>], base: i64) -> Option<Vec<Plan>> {
    if open.len() != kept.len() {
        return None;
    }
    let mut chain = Vec::new();
    let mut base = base;
    for id in kept {
        let plan = open.iter().find(|p| Some(p.id) == *id && p.base == base)?;
        base = plan.id;
        chain.push(plan.clone());
    }
    Some(chain)
}

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

/// What reading the notifications did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailRun {
    pub used: usize,
    pub rejected: usize,
    pub no_change: usize,
    pub unreadable: usize,
    /// Already recorded (delivered twice, or moved after a crash).
    pub duplicates: usize,
    /// Mailboxes that could not be read (`maildir: …`, `imap: …`): the annuaire was read all the
    /// same, since a notification is only a hint.
    pub errors: Vec<String>,
}

impl MailRun {
    fn add(&mut self, other: &MailRun) {
        self.used += other.used;
        self.rejected += other.rejected;
        self.no_change += other.no_change;
        self.unreadable += other.unreadable;
        self.duplicates += other.duplicates;
        self.errors.extend(other.errors.iter().cloned());
    }

    pub fn total(&self) -> usize {
        self.used + self.rejected + self.no_change + self.unreadable + self.duplicates
    }
}

/// What a planning pass did.
#[derive(Debug, Clone)]
pub struct PlanRun {
    pub read: Read,
    /// What was in force when the plans were computed.
    pub applied: Applied,
    /// The stored plans, as they stand after the pass (empty when nothing changed).
    pub plans: Vec<Plan>,
    /// With `--dry-run`, the plans that would have been stored.
    pub proposals: Vec<Proposal>,
    /// Outputs found different from what is in force and rewritten.
    pub repaired: Vec<String>,
    /// Notifications read before the source.
    pub mail: MailRun,
    /// What resolving the hosts in force changed (`None` while `[resolver]` is off).
    pub addresses: Option<BookChange>,
    /// The plans this read superseded, each with the new plans that replace it (none when the
    /// source no longer asks for what it did).
    pub superseded: Vec<(i64, Vec<i64>)>,
}

/// What `rocsync recover` read and recorded.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The applied plan that records the recovered state.
    pub plan: Plan,
    /// How many hosts it put in force.
    pub hosts: usize,
    /// The outputs read, each with what it holds.
    pub files: Vec<ReadBack>,
    /// Hosts whose port no output keeps, recorded on tcp/443.
    pub without_port: usize,
    /// Hosts that not every complete list holds, with the files that hold them.
    pub disagreements: Vec<(Host, Vec<PathBuf>)>,
}

/// The sinks built from the configuration's settings: the configuration says what to write
/// and where, the engine owns what writes it.
struct Outputs {
    files: FileSink,
    /// rocsync's nftables table, when `[nftables]` is enabled.
    nftables: Option<NftablesSink>,
}

impl Outputs {
    fn from_config(config: &Config) -> Outputs {
        Outputs {
            files: FileSink { exports: config.exports.clone() },
            nftables: config.nftables.layout.clone().map(|layout| NftablesSink { layout }),
        }
    }
}

pub struct Engine {
    pub config: Config,
    pub store: Store,
    /// The sinks that the configuration's settings ask for.
    outputs: Outputs,
    /// The web service client, built on first use. It lives as long as this engine (one
    /// configuration generation in `rocsync run`), and its pooled connections with it.
    client: Option<AnnuaireClient>,
    /// The runtime the engine's requests run on: the daemon's, or the process's ([`io_runtime`]).
    /// Always the same one for a given client, so that a pooled connection's task is alive
    /// whenever the client uses the connection again.
    io: Option<tokio::runtime::Handle>,
    /// The apply lock, while this engine holds it (see [`Engine::locked`]).
    apply_lock: Option<File>,
}

/// The runtime of a command that is not `rocsync run`: built once per process and kept, never one
/// per request. A runtime dropped after a request left a keep-alive connection in the client's
/// pool whose task was gone: the next request hung until its timeout or failed with "dispatch
/// task is gone". One worker thread, so that pooled connections' tasks run between requests.
fn io_runtime() -> Result<tokio::runtime::Handle, EngineError> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime.handle().clone());
    }
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rocsync-io")
        .enable_all()
        .build()
        .map_err(EngineError::Runtime)?;
    Ok(RUNTIME.get_or_init(|| built).handle().clone())
}

impl Engine {
    pub fn open(config: Config) -> Result<Engine, EngineError> {
        let store = Store::open(&config.state_dir)?.with_retention(config.keep_applied_states);
        let outputs = Outputs::from_config(&config);
        Ok(Engine { config, store, outputs, client: None, io: None, apply_lock: None })
    }

    /// Runs this engine's requests on `runtime` (the daemon's) instead of the process's own.
    /// Its methods are then called off that runtime's threads (a worker thread or
    /// `spawn_blocking`), which wait on `runtime` for each request.
    pub fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> Engine {
        self.io = Some(runtime);
        self
    }

    /// The runtime to wait on for a request (see [`Engine::on_runtime`]).
    fn io(&mut self) -> Result<tokio::runtime::Handle, EngineError> {
        if let Some(handle) = &self.io {
            return Ok(handle.clone());
        }
        let handle = io_runtime()?;
        self.io = Some(handle.clone());
        Ok(handle)
    }

    /// For the commands that only show: the store is opened read-only (nothing created,
    /// migrated or written), so that they answer on a full disk.
    pub fn open_read_only(config: Config) -> Result<Engine, EngineError> {
        let store = Store::open_read_only(&config.state_dir)?;
        let outputs = Outputs::from_config(&config);
        Ok(Engine { config, store, outputs, client: None, io: None, apply_lock: None })
    }

    fn sinks(&self) -> Vec<&dyn Sink> {
        let mut sinks: Vec<&dyn Sink> = vec![&self.outputs.files];
        if let Some(nft) = &self.outputs.nftables {
            sinks.push(nft);
        }
        sinks
    }

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
        let now_t = OffsetDateTime::now_utc();
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

    /// Reads the source and stores the plans that take what is in force to what it lists.
    /// With `dry_run`, stores nothing (the read is still recorded). Under the apply lock, so
    /// that no other pass applies between the read of what is in force and the plans.
    pub fn plan(&mut self, file: Option<&Path>, dry_run: bool) -> Result<PlanRun, EngineError> {
        if dry_run {
            return self.plan_unlocked(file, true);
        }
        self.locked(|e| e.plan_unlocked(file, false))
    }

    fn plan_unlocked(&mut self, file: Option<&Path>, dry_run: bool) -> Result<PlanRun, EngineError> {
        self.refuse_if_lost()?;
        let mut read = self.read_source(file)?;
        self.add_notified_hosts(&mut read.desired)?;
        let applied = self.store.applied()?;
        crate::catalogue::hold(&mut read.desired, &applied.state, &read.answer.held, &self.config.policy);
        // The RPN migration (issue 15): migrated AMCs stay closed while `[rpn]` is enabled.
        let migrated = if self.config.rpn.is_some() { self.store.rpn_migrated()? } else { Default::default() };
        crate::rpn::close_migrated(&mut read.desired, &migrated);
        let stale_serial = match (read.answer.serial, self.store.highest_applied_serial()?) {
            (answer, Some(in_force)) if answer.is_none_or(|a| a < in_force) => {
                warn!(serial = ?answer, in_force, "The answer is older than what is in force, or has no serial; its plans wait for approval.");
                Some((answer, in_force))
            }
            _ => None,
        };
        let ctx = Context {
            mode: self.config.mode,
            guard: self.config.guard,
            rejected_values: read.answer.rejected.len(),
            stale_serial,
        };
        let mut proposals = propose(&applied.state, &read.desired, &ctx);
        if !migrated.is_empty() {
            crate::rpn::hold_for_approval(&mut proposals, &migrated, &crate::rpn::last_uses(&self.store.usage_rows(0)?));
        }
        if self.store.rests_on_recovery()? {
            hold_closings(&mut proposals, RECOVERED_BASE);
        }
        let open = self.store.open_plans()?;
        let mut superseded = Vec::new();
        let plans = if dry_run {
            Vec::new()
        } else if proposals.is_empty() {
            // The source is back to what is in force: a plan still waiting came from an older
            // read, and approving it now would undo that.
            for id in self.store.supersede_open("the source now matches what is in force", &now())? {
                info!(plan = id, "Superseded: the source now matches what is in force.");
                superseded.push((id, Vec::new()));
            }
            Vec::new()
        } else {
            // A plan whose content did not change keeps its number (the RSSI is reviewing it);
            // when all of them did, nothing is stored.
            let kept = unchanged_plans(&open, &proposals);
            match still_holding(&open, &kept, applied.plan_id) {
                Some(chain) => {
                    info!(plans = ?chain.iter().map(|p| p.id).collect::<Vec<_>>(), "The open plans still hold.");
                    chain
                }
                None => {
                    let replanned = self.store.replan(&proposals, &kept, applied.plan_id, &read.source, read.answer.serial, &now())?;
                    for (id, by) in &replanned.superseded {
                        info!(plan = id, by = ?by, "Superseded by a newer read of the source.");
                    }
                    superseded = replanned.superseded;
                    replanned.plans
                }
            }
        };
        for p in &plans {
            info!(plan = p.id, status = %p.status, changes = p.diff.changes.len(), "Planned.");
        }
        Ok(PlanRun { read, applied, plans, proposals, repaired: Vec::new(), mail: MailRun::default(), addresses: None, superseded })
    }

    /// One reconcile pass: plan, apply what needs no approval, repair drifted outputs. The
    /// whole pass holds the apply lock: a second pass started meanwhile (the timer and the
    /// Maildir path unit) waits for it, then plans against what it applied.
    pub fn once(&mut self, dry_run: bool) -> Result<PlanRun, EngineError> {
        if dry_run {
            return self.once_unlocked(true);
        }
        self.locked(|e| e.once_unlocked(false))
    }

    fn once_unlocked(&mut self, dry_run: bool) -> Result<PlanRun, EngineError> {
        let span = info_span!("reconcile");
        let _enter = span.enter();
        // A lost store is refused before anything is read or moved.
        self.refuse_if_lost()?;
        // Notifications first: they are hints, and the poll that follows is their re-poll.
        // A mailbox that fails never keeps the annuaire, the authoritative source, from being
        // read: its error is reported and the pass goes on.
        let mut mail = MailRun::default();
        if !dry_run {
            let labels = [
                self.config.maildir.as_ref().map(|p| format!("maildir:{}", p.display())),
                self.config.imap.as_ref().map(|i| format!("imap:{}:{}/{}", i.server, i.port, i.folder)),
            ];
            for ((name, result), label) in [("maildir", self.process_maildir()), ("imap", self.process_imap())].into_iter().zip(labels) {
                let error = match result {
                    Ok(run) => {
                        mail.add(&run);
                        None
                    }
                    Err(EngineError::Store(e)) => return Err(EngineError::Store(e)),
                    Err(e) => {
                        let text = crate::error_chain(&e);
                        warn!(source = name, "Cannot read the notifications; the annuaire is read all the same: {text}");
                        mail.errors.push(format!("{name}: {text}"));
                        Some(text)
                    }
                };
                // Each mailbox's own health, for `status` and the console.
                if let Some(label) = label {
                    let read = SourceRead {
                        at: now(),
                        source: format!("{}{label}", crate::store::MAILBOX),
                        ok: error.is_none(),
                        serial: None,
                        hosts: None,
                        rejected: None,
                        error,
                    };
                    self.store.record_source_read(&read)?;
                }
            }
        }
        let mut run = self.plan_unlocked(None, dry_run)?;
        run.mail = mail;
        if dry_run {
            return Ok(run);
        }
        let ready: Vec<i64> = run.plans.iter().filter(|p| p.status == Status::Ready).map(|p| p.id).collect();
        for id in ready {
            self.apply(id, "rocsync")?;
        }
        run.plans = run.plans.iter().map(|p| self.store.plan(p.id)).collect::<Result<_, _>>()?;
        run.addresses = self.refresh_addresses()?;
        run.repaired = self.repair_drift()?;
        Ok(run)
    }

    /// Applies plan `id`, after the open plans it is based on (hybrid mode's openings come
    /// before the rest). Every plan of the chain must be ready or approved.
    pub fn apply(&mut self, id: i64, actor: &str) -> Result<Vec<Plan>, EngineError> {
        self.locked(|e| e.apply_locked(id, actor))
    }

    fn apply_locked(&mut self, id: i64, actor: &str) -> Result<Vec<Plan>, EngineError> {
        let in_force = self.store.applied_plan_id()?;
        let mut chain = vec![self.store.plan(id)?];
        while let Some(first) = chain.first() {
            if first.base == in_force || first.base == 0 {
                break;
            }
            match self.store.plan(first.base) {
                Ok(base) if base.status.is_open() => chain.insert(0, base),
                _ => break,
            }
        }
        let mut applied = Vec::new();
        for plan in chain {
            applied.push(self.apply_one(plan.id, actor)?);
        }
        Ok(applied)
    }

    fn apply_one(&mut self, id: i64, actor: &str) -> Result<Plan, EngineError> {
        let span = info_span!("apply", plan = id);
        let _enter = span.enter();
        let at = now();
        let (plan, applied) = self.store.check_applicable(id, &at)?;
        let next = plan.diff.apply_to(&applied.state, &at);
        let resolved = self.resolved()?;
        if let Err(e) = self.enforce(&next, plan.id, &resolved, &at, |_| true) {
            if let EngineError::Sink { sink, source, .. } = &e {
                let detail = format!("{sink}: {}", crate::error_chain(source));
                self.store.audit(actor, "plan.apply_failed", Some(id), &detail, &at)?;
            }
            return Err(e);
        }
        crate::sinks::files::failpoint("apply-before-commit");
        self.store.commit_apply(&plan, &next, actor, &at)?;
        info!(plan = id, hosts = next.len(), "Applied.");
        Ok(self.store.plan(id)?)
    }

    /// Reads every new message of the Maildir, records it once with its verdict, and moves it
    /// to `cur/`.
    pub fn process_maildir(&mut self) -> Result<MailRun, EngineError> {
        let Some(root) = self.config.maildir.clone() else { return Ok(MailRun::default()) };
        let io = |source| EngineError::Maildir { path: root.clone(), source };
        let maildir = Maildir::open(&root).map_err(io)?;
        let limit = self.config.notifications.max_message_bytes;
        let mut run = MailRun::default();
        for path in maildir.pending().map_err(io)? {
            let message = maildir.read(&path, limit).map_err(io)?;
            let origin = format!("maildir:{}", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
            let (record, closings) = self.notification_record(&message, &origin);
            let used = self.record_message(&record, &closings, &mut run)?;
            maildir.mark(&path, if used { "S" } else { "FS" }).map_err(io)?;
        }
        Ok(run)
    }

    /// Reads every message of the IMAP folder, records it once with its verdict, then moves it
    /// to the processed folder.
    pub fn process_imap(&mut self) -> Result<MailRun, EngineError> {
        let Some(settings) = self.config.imap.clone() else { return Ok(MailRun::default()) };
        let limit = self.config.notifications.max_message_bytes;
        let runtime = self.io()?;
        let (mut session, messages) = runtime.block_on(async {
            let (mut session, _) = imap::connect(&settings).await?;
            let messages = imap::fetch_all(&mut session, limit).await?;
            Ok::<_, imap::ImapError>((session, messages))
        })?;
        let mut run = MailRun::default();
        let mut done = Vec::new();
        for m in &messages {
            let origin = format!("imap:{}/{}", settings.folder, m.uid);
            let (record, closings) = self.notification_record(&m.message, &origin);
            done.push((m.uid, self.record_message(&record, &closings, &mut run)?));
        }
        // Moved only once recorded: a message still in the folder is one still to read.
        runtime.block_on(async {
            for (uid, used) in done {
                imap::move_processed(&mut session, uid, used, &settings.processed_folder).await?;
            }
            let _ = session.logout().await;
            Ok::<_, imap::ImapError>(())
        })?;
        Ok(run)
    }

    /// Records one message unless it was recorded before, settles the closings of a used one,
    /// and says whether it was used. A message recorded before does nothing again, and what
    /// is said is the verdict recorded then, which its flag must show whatever this copy would
    /// be judged now (another body under the same Message-ID, an allow-list changed since).
    fn record_message(&mut self, record: &NotificationRecord, closings: &[String], run: &mut MailRun) -> Result<bool, EngineError> {
        if !self.store.record_notification(record, &now())? {
            run.duplicates += 1;
            let recorded = self.store.notification_verdict(&record.key)?;
            let verdict = recorded.as_deref().unwrap_or("unknown");
            info!(message = %record.key, verdict = %verdict, "Notification already recorded.");
            return Ok(verdict == "used");
        }
        if record.verdict == "used" {
            // A closing announced by mail withdraws an opening announced by mail; what the
            // annuaire lists is closed by the annuaire.
            for host in closings {
                self.store.settle_notified_host(host, "closed")?;
            }
        }
        match record.verdict.as_str() {
            "used" => run.used += 1,
            "rejected" => run.rejected += 1,
            "no_change" => run.no_change += 1,
            _ => run.unreadable += 1,
        }
        info!(message = %record.key, verdict = %record.verdict, "Notification {}.", record.reason.as_deref().unwrap_or("read"));
        Ok(record.verdict == "used")
    }

    /// What to record of one message: its verdict, and for a used one, the openings it
    /// announces; beside it, the hosts whose closing it announces when used. A message over
    /// `notifications.max_message_bytes` was never read: it is recorded by where it lies, as
    /// unreadable.
    fn notification_record(&self, message: &mail::Incoming, origin: &str) -> (NotificationRecord, Vec<String>) {
        let n = &self.config.notifications;
        let unreadable = |reason: String| {
            let record = NotificationRecord {
                key: origin.to_owned(),
                origin: origin.to_owned(),
                sender: None,
                subject: None,
                verdict: "unreadable".into(),
                reason: Some(reason),
                changes: "[]".into(),
                rejected_lines: "[]".into(),
                openings: Vec::new(),
            };
            (record, Vec::new())
        };
        let raw = match message {
            mail::Incoming::Bytes(raw) => raw,
            mail::Incoming::TooLarge { size } => return unreadable(mail::too_large(*size, n.max_message_bytes)),
        };
        let notification = match mail::parse(raw, n.trusted_authserv_id.as_deref()) {
            Ok(notification) => notification,
            Err(e) => return unreadable(e.to_string()),
        };
        let verdict = mail::judge(&notification, &n.allowed_senders, n.require_dkim_pass);
        let mut openings = Vec::new();
        let mut closings = Vec::new();
        if verdict == mail::Verdict::Used {
            for c in &notification.changes {
                match c.action {
                    mail::Action::Open => openings.push((c.host.to_string(), c.amc.to_string(), c.name.clone(), c.effective.clone())),
                    mail::Action::Close => closings.push(c.host.to_string()),
                }
            }
        }
        let reason = match &verdict {
            mail::Verdict::Rejected(r) | mail::Verdict::Unreadable(r) => Some(r.clone()),
            mail::Verdict::NoChange if notification.rejected_lines.is_empty() => Some("no change found in the message".into()),
            mail::Verdict::NoChange => {
                Some(format!("no change found in the message, {} line(s) rejected", notification.rejected_lines.len()))
            }
            mail::Verdict::Used => None,
        };
        let record = NotificationRecord {
            key: notification.message_id.clone().unwrap_or_else(|| origin.to_owned()),
            origin: origin.to_owned(),
            sender: notification.from.clone(),
            subject: notification.subject.clone(),
            verdict: verdict.word().into(),
            reason,
            changes: serde_json::to_string(&notification.changes).unwrap_or_else(|_| "[]".into()),
            rejected_lines: serde_json::to_string(&notification.rejected_lines).unwrap_or_else(|_| "[]".into()),
            openings,
        };
        (record, closings)
    }

    /// Adds the openings that only notifications name to the desired state, marked as such
    /// (the guard makes any plan with them wait for approval). One the annuaire now lists is
    /// settled as `listed`.
    fn add_notified_hosts(&mut self, desired: &mut State) -> Result<(), EngineError> {
        for (host, amc, name, _effective, _message) in self.store.pending_notified_hosts()? {
            let (Ok(h), Ok(number)) = (Host::parse(&host), AmcNumber::parse(&amc)) else { continue };
            if desired.entries.contains_key(&h) {
                self.store.settle_notified_host(&host, "listed")?;
                continue;
            }
            if self.config.policy.excludes(&h) {
                continue;
            }
            let entry = desired.entries.entry(h).or_insert_with(|| Entry {
                ports: BTreeSet::from([DOMAIN_PORT]),
                amcs: BTreeMap::new(),
                origins: BTreeSet::from([Origin::Notification]),
                since: None,
            });
            entry.amcs.insert(number, AmcUse { name, services: BTreeSet::new() });
        }
        Ok(())
    }

    /// A plan that restores the state plan `to` put in force (by default the one before what is
    /// in force now). It waits for approval like any change a person asks for, and the mass
    /// removal guard still speaks.
    pub fn rollback(&mut self, to: Option<i64>, by: &str) -> Result<Plan, EngineError> {
        let by = &crate::text::excerpt(by, 120);
        let applied = self.store.applied()?;
        let history = self.store.applied_history()?;
        let target = match to {
            Some(id) => id,
            None => {
                let mut ids: Vec<i64> = history.iter().map(|(id, _)| *id).collect();
                ids.dedup();
                match ids.iter().rposition(|id| *id == applied.plan_id) {
                    Some(i) if i > 0 => ids[i - 1],
                    _ => return Err(EngineError::Rollback("there is no earlier applied state to return to".into())),
                }
            }
        };
        if !history.iter().any(|(id, _)| *id == target) {
            return Err(EngineError::Rollback(format!("plan {target} was never applied")));
        }
        let state = self.store.applied_state_of(target)?.ok_or_else(|| {
            EngineError::Rollback(format!("the state of plan {target} is no longer kept whole (store.keep_applied_states)"))
        })?;
        let Some(diff) = HostDiff::between(&applied.state, &state) else {
            return Err(EngineError::Rollback(format!("what is in force is already the state of plan {target}")));
        };
        let mut reasons = vec![format!("rollback to the state of plan {target}, asked by {by}")];
        reasons.extend(self.config.guard.check(applied.state.len(), &diff));
        let proposal = Proposal { diff, needs_approval: true, reasons };
        let source = format!("rollback:{target}");
        let plan = self.store.insert_plans(&[proposal], applied.plan_id, &source, None, &now())?.remove(0);
        self.store.audit(by, "plan.rollback_requested", Some(plan.id), &format!("to the state of plan {target}"), &now())?;
        Ok(plan)
    }

    /// Records a decision; an approval also applies the plan unless `apply` is false.
    pub fn decide(
        &mut self,
        id: i64,
        decision: Decision,
        by: &str,
        comment: Option<&str>,
        apply: bool,
    ) -> Result<Plan, EngineError> {
        // Who decides and why are typed by people but shown to others (plan show, audit, the
        // console): escaped once, here, like every text from outside.
        let (by, comment) = (crate::text::excerpt(by, 120), comment.map(|c| crate::text::excerpt(c, 2000)));
        // A plan computed on top of one that still waits cannot apply before it: said now, to
        // the person approving, rather than found by the daemon at every retry.
        if decision == Decision::Approve {
            let in_force = self.store.applied_plan_id()?;
            let mut base = self.store.plan(id)?.base;
            while base != 0 && base != in_force {
                let Ok(before) = self.store.plan(base) else { break };
                if before.status == Status::Pending {
                    return Err(EngineError::BaseWaits { plan: id, base });
                }
                if !before.status.is_open() {
                    break;
                }
                base = before.base;
            }
        }
        let plan = self.store.decide(id, decision, &by, comment.as_deref(), &now())?;
        if decision == Decision::Reject {
            // Openings only a notification named are not proposed again once rejected.
            let notified = plan.diff.changes.iter().filter(|c| {
                c.after.as_ref().is_some_and(|e| e.origins == BTreeSet::from([Origin::Notification]))
            });
            for change in notified {
                self.store.settle_notified_host(change.host.as_str(), "rejected")?;
            }
        }
        if decision == Decision::Approve && apply {
            self.apply(id, &by)?;
            return Ok(self.store.plan(id)?);
        }
        Ok(plan)
    }

    /// Rewrites outputs that no longer match what is in force (deleted or edited by hand).
    pub fn repair_drift(&mut self) -> Result<Vec<String>, EngineError> {
        self.locked(|e| e.repair_drift_locked(false))
    }

    /// After a reload: rewrites the outputs that the new configuration writes differently (a
    /// `wildcard_style`, an export added), audited as `config.outputs_rewritten`. Nobody touched
    /// them: it is not drift, and it is not reported as repaired tampering.
    pub fn rewrite_for_configuration(&mut self) -> Result<Vec<String>, EngineError> {
        self.locked(|e| e.repair_drift_locked(true))
    }

    fn repair_drift_locked(&mut self, configuration_changed: bool) -> Result<Vec<String>, EngineError> {
        let applied = self.store.applied()?;
        if applied.plan_id == 0 {
            return Ok(Vec::new());
        }
        let resolved = self.resolved()?;
        let mut drifted = Vec::new();
        let mut repaired = Vec::new();
        for sink in self.sinks() {
            let drift = sink.drift(&applied.state, applied.plan_id, &resolved);
            if !drift.is_empty() {
                drifted.push(sink.name().to_owned());
                repaired.extend(drift);
            }
        }
        if repaired.is_empty() {
            return Ok(repaired);
        }
        self.enforce(&applied.state, applied.plan_id, &resolved, &now(), |s| drifted.iter().any(|d| d == s.name()))?;
        for d in &repaired {
            if configuration_changed {
                info!("Rewritten for the new configuration: {d}.");
                let detail = format!("{d}: the configuration changed");
                self.store.audit("rocsync", "config.outputs_rewritten", Some(applied.plan_id), &detail, &now())?;
            } else {
                warn!("Repaired drift: {d}.");
                self.store.audit("rocsync", "sink.repaired", Some(applied.plan_id), d, &now())?;
            }
        }
        Ok(repaired)
    }

    /// Enforces `state` (put in force by plan `plan_id`) through the sinks `select` picks, then
    /// logs and audits what failed after it (post-write commands). A sink error stops at once.
    fn enforce(
        &mut self,
        state: &State,
        plan_id: i64,
        resolved: &Resolved,
        at: &str,
        select: impl Fn(&dyn Sink) -> bool,
    ) -> Result<(), EngineError> {
        let mut warnings = Vec::new();
        for sink in self.sinks().into_iter().filter(|s| select(*s)) {
            let w = sink
                .apply(state, plan_id, resolved)
                .map_err(|source| EngineError::Sink { plan: plan_id, sink: sink.name().to_owned(), source })?;
            warnings.extend(w);
        }
        for w in warnings {
            warn!(plan = plan_id, "{w}");
            self.store.audit("rocsync", "export.post_write_failed", Some(plan_id), &w, at)?;
        }
        Ok(())
    }

    /// The `nft` commands equivalent to what plan `plan` changes in rocsync's sets, with the
    /// addresses the resolver knows now: for review (`rocsync plan show ID --format nft`).
    pub fn plan_nft(&self, plan: &Plan) -> Result<String, EngineError> {
        let base = match plan.base {
            0 => State::default(),
            id => self.store.applied_state_of(id)?.ok_or(EngineError::StateNotKept(id))?,
        };
        let after = plan.diff.apply_to(&base, &now());
        let resolved = Resolved { addresses: self.resolved()?.addresses, leaving: Default::default() };
        let names = self.config.nftables.names.clone();
        let mut out = format!(
            "# Plan {}: the nft commands equivalent to what rocsync sends through netlink, in one\n\
             # transaction, with the addresses the resolver knows now.\n",
            plan.id
        );
        for change in &plan.diff.changes {
            let host = &change.host;
            if change.after.is_none() {
                continue;
            }
            if host.is_wildcard() {
                out.push_str(&format!("# {host}: a wildcard has no address; allow it through a proxy export.\n"));
            } else if !resolved.addresses.contains_key(host) {
                out.push_str(&format!("# {host}: not resolved yet; its addresses are added once it resolves.\n"));
            }
        }
        let commands = element_commands(&wanted(&base, &resolved, 0), &wanted(&after, &resolved, 0), &names);
        if commands.is_empty() {
            out.push_str("# No element changes.\n");
        }
        out.push_str(&commands);
        Ok(out)
    }

    /// Outputs that differ from what is in force, without touching them.
    pub fn drift(&self) -> Result<Vec<String>, EngineError> {
        let applied = self.store.applied()?;
        if applied.plan_id == 0 {
            return Ok(Vec::new());
        }
        let resolved = self.resolved()?;
        Ok(self.sinks().iter().flat_map(|s| s.drift(&applied.state, applied.plan_id, &resolved)).collect())
    }

    /// The addresses of the hosts in force, as last resolved, with those in their grace (none
    /// while `[resolver]` is off).
    fn resolved(&self) -> Result<Resolved, EngineError> {
        if !self.config.resolver.enabled {
            return Ok(Resolved::default());
        }
        Ok(self.store.address_book()?.resolved(self.config.resolver.policy.grace))
    }

    /// Resolves the hosts in force whose answer ran out, drops addresses gone longer than the
    /// grace, keeps the book, and rewrites the outputs when an address came or went. `None`
    /// while `[resolver]` is off.
    pub fn refresh_addresses(&mut self) -> Result<Option<BookChange>, EngineError> {
        let settings = self.config.resolver.clone();
        if !settings.enabled {
            return Ok(None);
        }
        let applied = self.store.applied()?;
        let mut book = self.store.address_book()?;
        let leaving_before = book.leaving(settings.policy.grace);
        book.track(applied.state.entries.keys(), now_millis());
        let runtime = self.io()?;
        let change = runtime.block_on(async {
            let resolver = DnsResolver::new(&settings.servers, settings.timeout, settings.concurrency)?;
            Ok::<_, ResolverError>(resolver.refresh(&mut book, &settings.policy).await)
        })?;
        self.store.save_address_book(&book)?;
        for (host, ip, why) in &change.refused {
            let detail = format!("{host} resolves to {ip}, a {why} address: refused (resolver.allow_networks allows a range knowingly)");
            self.store.audit("rocsync", "dns.refused", Some(applied.plan_id), &detail, &now())?;
        }
        let resolved = book.resolved(settings.policy.grace);
        // An address entering or leaving its grace changes nftables' timeouts, not the files.
        if change.added.is_empty() && change.removed.is_empty() && resolved.leaving == leaving_before {
            return Ok(Some(change));
        }
        let detail = format!(
            "+{} -{} address(es), {} in their grace",
            change.added.len(),
            change.removed.len(),
            resolved.leaving.len()
        );
        info!(plan = applied.plan_id, "Addresses changed: {detail}.");
        self.store.audit("rocsync", "addresses.changed", Some(applied.plan_id), &detail, &now())?;
        self.locked(|e| {
            // What is in force now: another process may have applied a plan since the read above.
            let applied = e.store.applied()?;
            if applied.plan_id == 0 {
                return Ok(());
            }
            e.enforce(&applied.state, applied.plan_id, &resolved, &now(), |_| true)
        })?;
        Ok(Some(change))
    }

    /// Runs `f` holding the apply lock: one pass or apply at a time across processes. Nested
    /// calls (a pass applies, then repairs) take it once.
    fn locked<T>(&mut self, f: impl FnOnce(&mut Engine) -> Result<T, EngineError>) -> Result<T, EngineError> {
        if self.apply_lock.is_some() {
            return f(self);
        }
        self.apply_lock = Some(self.acquire_lock()?);
        let result = f(self);
        // Closing the file releases the lock.
        self.apply_lock = None;
        result
    }

    /// Takes the apply lock, waiting up to [`LOCK_WAIT`] (and saying so) while another rocsync
    /// holds it. The lock goes with the returned file, which names the holder's pid.
    fn acquire_lock(&self) -> Result<File, EngineError> {
        let path = self.config.state_dir.join(APPLY_LOCK);
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            // A link planted there is refused, not followed (the pid is written into it).
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| EngineError::Lock { path: path.clone(), source })?;
        let started = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(source)) => return Err(EngineError::Lock { path: path.clone(), source }),
            }
            let holder = lock_holder(&path);
            if started.elapsed() >= LOCK_WAIT {
                return Err(EngineError::LockTimeout { path: path.clone(), holder, waited: LOCK_WAIT.as_secs() });
            }
            if !told {
                warn!(lock = %path.display(), "Waiting for the apply lock: {holder} is planning or applying (up to {} s).", LOCK_WAIT.as_secs());
                told = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if file.set_len(0).is_ok() {
            let _ = writeln!(file, "{}", std::process::id());
        }
        Ok(file)
    }

    /// Outputs that rocsync wrote, found while the store has never held a plan: its memory was
    /// lost (`rm state.db`, a disk replaced). `None` when the store has its history, or when no
    /// such output exists (a first run).
    pub fn lost_store(&self) -> Result<Option<Vec<ReadBack>>, EngineError> {
        if !self.store.is_new()? {
            return Ok(None);
        }
        let found: Vec<ReadBack> =
            readback::read(&self.config.exports)?.into_iter().filter(ReadBack::written_by_rocsync).collect();
        Ok((!found.is_empty()).then_some(found))
    }

    /// Refuses to plan from an empty state while outputs hold what was in force.
    fn refuse_if_lost(&self) -> Result<(), EngineError> {
        match self.lost_store()? {
            None => Ok(()),
            Some(found) => Err(EngineError::StoreLost {
                state_dir: self.config.state_dir.clone(),
                found: found.iter().map(ReadBack::describe).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Records what the outputs hold as the state in force, after the store was lost: the
    /// next pass plans against it, and what it closes waits for approval.
    pub fn recover(&mut self, by: &str) -> Result<Recovery, EngineError> {
        let by = crate::text::excerpt(by, 120);
        self.locked(|e| e.recover_locked(&by))
    }

    fn recover_locked(&mut self, by: &str) -> Result<Recovery, EngineError> {
        let current = self.store.applied_plan_id()?;
        if current != 0 {
            return Err(StoreError::NotLost { current }.into());
        }
        let files: Vec<ReadBack> =
            readback::read(&self.config.exports)?.into_iter().filter(ReadBack::written_by_rocsync).collect();
        if files.is_empty() {
            let configured: Vec<String> = self.config.exports.iter().map(|f| f.path.display().to_string()).collect();
            return Err(EngineError::NothingToRecover(format!(
                "no output that rocsync wrote was found (configured: {}); `rocsync once` starts from the empty state",
                if configured.is_empty() { "none".to_owned() } else { configured.join(", ") }
            )));
        }
        let state = readback::merge(&files);
        let names: Vec<String> = files.iter().map(ReadBack::describe).collect();
        let plan = self.store.record_recovery(&state, &names, by, &now())?;
        warn!(plan = plan.id, hosts = state.len(), by = %by, "Recovered the state in force from the outputs.");
        Ok(Recovery {
            plan,
            hosts: state.len(),
            without_port: readback::hosts_without_port(&files).len(),
            disagreements: readback::disagreements(&files),
            files,
        })
    }
}

/// Why the plans computed against a recovered state hold their closings, until a person has
/// approved one ([`Store::rests_on_recovery`]).
const RECOVERED_BASE: &str = "computed against a state recovered from the outputs (rocsync recover): \
    a closing may come from what the outputs could not tell (ports, provenance)";

/// Makes every proposal that closes something wait for approval, for `reason`.
fn hold_closings(proposals: &mut [Proposal], reason: &str) {
    for p in proposals.iter_mut().filter(|p| p.diff.closings() > 0) {
        if !p.reasons.iter().any(|r| r == reason) {
            p.reasons.push(reason.to_owned());
        }
        p.needs_approval = true;
    }
}

/// Who holds the apply lock, as its file tells: `another rocsync (pid 4242)`.
fn lock_holder(path: &Path) -> String {
    match std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
        Some(pid) => format!("another rocsync (pid {pid})"),
        None => "another rocsync".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Mode;
    use crate::testing::{ctx, state};

    /// Issue 11, item 3: each annuaire change rebuilt the notification-only plan under a new
    /// number, mailed again. A plan whose content did not change keeps its number.
    #[test]
    fn a_plan_whose_content_did_not_change_keeps_its_number() {
        let (v1, v2) = (state("urls-v1.json"), state("urls-v2.json"));
        let proposals = propose(&v1, &v2, &ctx(Mode::Hybrid));
        let plan = |id: i64, base: i64, p: &Proposal| Plan {
            id,
            created: "t".into(),
            base,
            source: "a".into(),
            serial: None,
            status: Status::Pending,
            needs_approval: p.needs_approval,
            reasons: p.reasons.clone(),
            diff: p.diff.clone(),
        };
        let open = vec![plan(5, 4, &proposals[0]), plan(6, 5, &proposals[1])];
        let kept = unchanged_plans(&open, &proposals);
        assert_eq!(kept, [Some(5), Some(6)]);
        let ids = |chain: Option<Vec<Plan>>| chain.map(|c| c.iter().map(|p| p.id).collect::<Vec<_>>());
        assert_eq!(ids(still_holding(&open, &kept, 4)), Some(vec![5, 6]));
        assert_eq!(ids(still_holding(&open, &kept, 3)), None, "another state is in force: chained again");
        // A newer read changes the openings only: the closing keeps its number.
        let mut other = proposals.clone();
        other[0].diff.changes.pop();
        assert_eq!(unchanged_plans(&open, &other), [None, Some(6)]);
    }

    /// Reasons the engine words have their French form for the e-mails.
    #[test]
    fn the_engines_reasons_have_a_french_form() {
        assert!(crate::plan::french(RECOVERED_BASE).is_some_and(|f| f.starts_with("calculé sur un état repris")));
    }

    #[test]
    fn closings_computed_against_a_recovered_state_wait_in_every_mode() {
        let (v1, v2) = (state("urls-v1.json"), state("urls-v2.json"));
        for mode in [Mode::Auto, Mode::Hybrid, Mode::Review] {
            let mut proposals = propose(&v1, &v2, &ctx(mode));
            hold_closings(&mut proposals, RECOVERED_BASE);
            for p in &proposals {
                let closes = p.diff.closings() > 0;
                assert!(!closes || p.needs_approval, "{mode}: a closing applies without approval");
                assert_eq!(closes, p.reasons.iter().any(|r| r == RECOVERED_BASE), "{mode}");
            }
            // Openings alone are not held (hybrid mode applies them at once).
            if mode == Mode::Hybrid {
                assert!(!proposals[0].needs_approval && proposals[0].diff.closings() == 0);
            }
            let again = proposals.clone();
            hold_closings(&mut proposals, RECOVERED_BASE);
            assert_eq!(proposals, again, "holding twice adds nothing");
        }
    }
}
