//! One reconcile pass and the plan commands, on top of the pure core, the store and the sinks.
//!
//! [`Engine::once`] reads top to bottom: read the source → compute the desired state → diff it
//! against what is in force → store the plans → apply those that need no approval → repair
//! outputs that drifted. A source error stops the pass before any plan is made: what is in
//! force stays in force.
//!
//! Each file holds one concern, as its own `impl Engine`: this one the engine, its errors, the
//! sinks it builds and the apply lock; `read` the annuaire (a file or the web
//! service); `notifications` the Maildir and the IMAP folder; `plans` the pass, the plans and the
//! decisions on them; `enforce` applying, repairing drift and recovering a lost store;
//! `addresses` the resolver's refresh.

use std::fs::File;
use std::fs::TryLockError;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::config::Config;
use crate::resolve::ResolverError;
use crate::sinks::files::FileSink;
use crate::sinks::nftables::NftablesSink;
use crate::sinks::readback::ReadError;
use crate::sinks::{Sink, SinkError};
use crate::sources::SourceError;
use crate::sources::https::{AnnuaireClient, FetchError, TlsSetupError};
use crate::sources::imap;
use crate::store::{Store, StoreError};

mod addresses;
mod enforce;
mod notifications;
mod plans;
mod read;

pub use enforce::Recovery;
pub use notifications::MailRun;
pub use plans::PlanRun;
pub use read::{FetchInfo, Read};

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

use crate::clock::now;

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

    pub fn open(config: Config) -> Result<Engine, EngineError> {
        let store = Store::open(&config.state_dir)?.with_retention(config.keep_applied_states);
        let outputs = Outputs::from_config(&config);
        Ok(Engine { config, store, outputs, client: None, io: None, apply_lock: None })
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
}

/// Who holds the apply lock, as its file tells: `another rocsync (pid 4242)`.
fn lock_holder(path: &Path) -> String {
    match std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse::<u32>().ok()) {
        Some(pid) => format!("another rocsync (pid {pid})"),
        None => "another rocsync".to_owned(),
    }
}
