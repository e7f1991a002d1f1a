//! rocsync's memory: SQLite under `store.state_dir`.
//!
//! It keeps what is in force (every applied state, newest last, so an earlier one can be
//! restored), every plan with its diff and status, every approval and rejection, each source
//! read, the review console's accounts and sessions (`console`), and an append-only audit log
//! (triggers refuse any update or delete of it). Every change of several rows is one
//! transaction: a crash leaves the old rows or the new ones.
//!
//! The directory is created its owner's only (0700), and so are the database and SQLite's
//! `-wal` and `-shm` beside it (0600), whatever the umask: plans name the hospital's
//! openings. The commands that only show (`status`, `audit`, `plan list`, …) open it with
//! [`Store::open_read_only`], which writes nothing, so that they answer on a full disk.
//!
//! # Layout
//!
//! One [`Store`], its `impl` split by concern:
//! - `schema`: the tables, their migrations, opening the database (and read-only);
//! - `files`: the state directory, its owner and modes;
//! - `plans`: plans and the decisions on them; `applied`: the states put in force, recovery,
//!   the audit log;
//! - `sources`: each read of a source and its last good answer; `notifications`: the e-mails
//!   read and the openings only they name; `addresses`: the resolver's address book;
//! - `alerts`: the alert queue and where each followed log was read up to; `usage`: requests
//!   counted per opening; `console`: the review console's accounts and sessions.
//!
//! Values cross this boundary whole: a host is a [`crate::host::Host`], an AMC number an
//! [`crate::amc::AmcNumber`], a verdict a [`MailVerdict`], parsed once here; a row that no
//! longer parses is a [`StoreError::Corrupt`] naming its table and row.

use std::path::PathBuf;

use rusqlite::Connection;

use crate::plan::Status;

mod addresses;
mod alerts;
mod applied;
mod console;
mod files;
mod notifications;
mod plans;
mod schema;
mod sources;
mod usage;

pub use alerts::{QueuedAlert, Raised};
// A watcher's position is the watcher's type; the store keeps it.
pub use crate::watch::follow::LogPosition;
pub use applied::{Applied, AuditEntry};
pub use console::{SessionRow, UserRow};
pub use files::{Ids, create_state_dir, user_name};
pub use notifications::{MailVerdict, NotificationRecord, NotificationRow, NotifiedOpening, PendingOpening, Settled};
pub use plans::{Decision, DecisionRecord, Replanned};
pub use sources::{CachedAnswer, MAILBOX, SourceRead};

use alerts::raise_in;
use applied::audit_in;
use schema::SCHEMA_VERSION;

/// The database's file name in the state directory.
pub const DB_FILE: &str = "state.db";

/// The source of the plan that records a state recovered from the outputs (`rocsync recover`).
pub const RECOVERY_SOURCE: &str = "recovery";

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory or the database cannot be created or opened.
    #[error("cannot open the state store in {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file of the state directory that this process may not write: another user made it
    /// (root running `rocsync poll` before the service's first start), or owns the directory.
    /// SQLite would say only "attempt to write a readonly database", at the first write.
    #[error("{message}")]
    NotWritable { path: PathBuf, message: String },
    /// The database was written by a newer rocsync.
    #[error("the state store has schema version {found}; this rocsync knows version {SCHEMA_VERSION} at most")]
    Version { found: i64 },
    /// A command that only reads found a database of an older rocsync: it does not migrate it.
    #[error(
        "the state store {} has schema version {found}, older than this rocsync's {SCHEMA_VERSION}; a command that only reads does not migrate it: run one that writes first (`rocsync once`, or start `rocsync run`)",
        path.display()
    )]
    Outdated { path: PathBuf, found: i64 },
    /// `rocsync recover` on a store that has a state in force: it was not lost.
    #[error(
        "plan {current} is in force: the state store was not lost and there is nothing to recover (`rocsync rollback` returns to an earlier state)"
    )]
    NotLost { current: i64 },
    /// A query failed.
    #[error("state store query failed")]
    Sql(#[from] rusqlite::Error),
    /// A stored value no longer reads back (edited by hand, or a bug); `what` names it with its
    /// table and row.
    #[error("the state store holds an unreadable {what}")]
    Corrupt {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No plan has that id.
    #[error("there is no plan {0}")]
    NoPlan(i64),
    /// The plan's status does not allow the operation.
    #[error("plan {id} is {status}; {hint}")]
    WrongStatus { id: i64, status: Status, hint: String },
    /// The plan was computed against a state that is no longer in force.
    #[error(
        "plan {id} was computed against the state of plan {base}, but plan {current} is in force now; it is superseded: run `rocsync plan` again"
    )]
    Stale { id: i64, base: i64, current: i64 },
}

impl StoreError {
    /// A stored value that does not read back: `what` says which, with its table and row.
    fn corrupt(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Corrupt { what: what.into(), source: source.into() }
    }
}

/// The state store: one SQLite connection. Its methods are grouped by concern in the modules
/// of this folder.
pub struct Store {
    conn: Connection,
    /// How many applied states are kept whole; older ones keep their row (plan, time) only.
    keep_states: usize,
}

/// The default of `store.keep_applied_states`.
pub const KEEP_APPLIED_STATES: usize = 100;
