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

use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;
use tracing::warn;

use crate::alerts::Alert;
use crate::catalogue::State;
use crate::plan::{HostDiff, Plan, Proposal, Status};

mod console;
mod usage;

pub use console::{SessionRow, UserRow};

const SCHEMA_VERSION: i64 = 7;

/// The database's file name in the state directory.
pub const DB_FILE: &str = "state.db";

/// The source of the plan that records a state recovered from the outputs (`rocsync recover`).
pub const RECOVERY_SOURCE: &str = "recovery";

const SCHEMA: &str = r#"
CREATE TABLE plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    base INTEGER NOT NULL,
    source TEXT NOT NULL,
    serial INTEGER,
    status TEXT NOT NULL,
    needs_approval INTEGER NOT NULL,
    reasons TEXT NOT NULL,
    diff TEXT NOT NULL
);
CREATE TABLE applied (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id INTEGER NOT NULL REFERENCES plans(id),
    applied_at TEXT NOT NULL,
    -- NULL once older than the retention (`store.keep_applied_states`).
    state TEXT
);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id INTEGER NOT NULL REFERENCES plans(id),
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    by TEXT NOT NULL,
    at TEXT NOT NULL,
    comment TEXT
);
CREATE TABLE source_reads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    source TEXT NOT NULL,
    ok INTEGER NOT NULL,
    serial INTEGER,
    hosts INTEGER,
    rejected INTEGER,
    error TEXT
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    plan_id INTEGER,
    detail TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// Version 6: the review console's accounts (Argon2id hashes), its sessions (only a hash of
/// each session id is kept) and the login failures that throttle guessing.
const SCHEMA_6: &str = r#"
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('rssi', 'engineer', 'helpdesk')),
    hash TEXT NOT NULL,
    created TEXT NOT NULL,
    changed TEXT NOT NULL
);
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    seen_ms INTEGER NOT NULL,
    address TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user);
CREATE TABLE login_failures (
    key TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX login_failures_by_key ON login_failures (key, at_ms);
"#;

/// Version 5: the daemon's alert queue (nothing lost across an SMTP outage or a restart) and
/// where it stopped in each log it follows.
const SCHEMA_5: &str = r#"
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    roles TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    send_after_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'held', 'digested', 'dropped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at TEXT,
    after_sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alerts_by_key ON alerts (key, created_ms);
CREATE INDEX alerts_by_status ON alerts (status, send_after_ms);
CREATE TABLE log_positions (
    path TEXT PRIMARY KEY,
    inode INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    first_line TEXT NOT NULL
);
"#;

/// Version 4: the resolver's address book, so that the grace of a vanished address outlives
/// a restart.
const SCHEMA_4: &str = r#"
CREATE TABLE address_book (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    book TEXT NOT NULL
);
"#;

/// Version 3: every notification e-mail read, once each, with its verdict; and the openings
/// that only a notification names, until the annuaire lists them or a person rejects them.
const SCHEMA_3: &str = r#"
CREATE TABLE notifications (
    key TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    origin TEXT NOT NULL,
    sender TEXT,
    subject TEXT,
    verdict TEXT NOT NULL,
    reason TEXT,
    changes TEXT NOT NULL,
    rejected_lines TEXT NOT NULL
);
CREATE TABLE notified_hosts (
    host TEXT NOT NULL,
    amc TEXT NOT NULL,
    name TEXT NOT NULL,
    effective TEXT NOT NULL,
    message_key TEXT NOT NULL REFERENCES notifications(key),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'rejected', 'listed', 'closed')),
    PRIMARY KEY (host, message_key)
);
"#;

/// Version 2: the last good answer of each source, for `If-None-Match` and for a 304.
const SCHEMA_2: &str = r#"
CREATE TABLE source_cache (
    source TEXT PRIMARY KEY,
    fetched_at TEXT NOT NULL,
    etag TEXT,
    content_type TEXT,
    body BLOB NOT NULL
);
"#;

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
    /// A stored value no longer reads back (edited by hand, or a bug).
    #[error("the state store holds an unreadable {what}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
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

/// What is in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The plan whose application produced it; 0 before the first apply.
    pub plan_id: i64,
    pub at: Option<String>,
    pub state: State,
}

/// The prefix of a mailbox's reads in `source_reads` (`mailbox:maildir:/var/…`), which keeps
/// them apart from the annuaire's.
pub const MAILBOX: &str = "mailbox:";

/// One read of a source, successful or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRead {
    pub at: String,
    pub source: String,
    pub ok: bool,
    pub serial: Option<u64>,
    pub hosts: Option<usize>,
    pub rejected: Option<usize>,
    pub error: Option<String>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub plan_id: Option<i64>,
    pub detail: String,
}

/// The last good answer of a source, with its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedAnswer {
    pub fetched_at: String,
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A notification as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    /// The Message-ID, or where the message came from when it has none.
    pub key: String,
    pub origin: String,
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub verdict: String,
    pub reason: Option<String>,
    /// JSON of the changes and of the rejected lines.
    pub changes: String,
    pub rejected_lines: String,
    /// Openings to consider: (host, AMC number, AMC name, date of effect).
    pub openings: Vec<(String, String, String, String)>,
}

/// A recorded notification, for `rocsync notifications`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationRow {
    pub key: String,
    pub received_at: String,
    pub origin: String,
    pub sender: Option<String>,
    pub subject: Option<String>,
    pub verdict: String,
    pub reason: Option<String>,
    pub changes: serde_json::Value,
    pub rejected_lines: serde_json::Value,
}

/// An approval or a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

/// A recorded decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionRecord {
    pub decision: String,
    pub by: String,
    pub at: String,
    pub comment: Option<String>,
}

pub struct Store {
    conn: Connection,
    /// How many applied states are kept whole; older ones keep their row (plan, time) only.
    keep_states: usize,
}

/// The default of `store.keep_applied_states`.
pub const KEEP_APPLIED_STATES: usize = 100;

impl Store {
    /// Opens (creating if needed) `state.db` in `state_dir`. The directory is created 0700 and
    /// the database 0600 before SQLite writes anything; SQLite gives its `-wal` and `-shm` files
    /// the database's mode.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open { path: state_dir.to_owned(), source };
        let path = state_dir.join(DB_FILE);
        create_state_dir(state_dir).map_err(|e| open_err(Box::new(e)))?;
        if let Some(me) = Ids::current() {
            check_writable(state_dir, &me)?;
        }
        create_private_file(&path).map_err(|e| open_err(Box::new(e)))?;
        let conn = Connection::open(&path).map_err(|e| open_err(Box::new(e)))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| open_err(Box::new(e)))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Those an older rocsync left readable by others.
        for suffix in ["-wal", "-shm"] {
            restrict(&sidecar(&path, suffix), 0o600);
        }
        let mut store = Store { conn, keep_states: KEEP_APPLIED_STATES };
        store.migrate()?;
        Ok(store)
    }

    /// Opens the store to read it only: nothing is created, migrated or written, so that the
    /// commands that only show answer on a full disk or from a directory they may not write. A
    /// store that does not exist yet reads as empty; one of an older schema is an error.
    pub fn open_read_only(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join(DB_FILE);
        match std::fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Store::empty(),
            Err(e) => return Err(StoreError::Open { path: path.clone(), source: Box::new(e) }),
        }
        let conn = match read_connection(&path, "mode=ro") {
            Ok(conn) => conn,
            // SQLite could not set up the WAL index beside the database (a full disk, a
            // directory this user may not write): read without it.
            Err(first) if needs_to_write(&first) => read_without_writing(&path, first)
                .map_err(|e| StoreError::Open { path: path.clone(), source: Box::new(e) })?,
            Err(e) => return Err(StoreError::Open { path: path.clone(), source: Box::new(e) }),
        };
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Version { found: version });
        }
        if version < SCHEMA_VERSION {
            let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))?;
            // Created and never written (a crash before the first pass): nothing to read.
            if version == 0 && tables == 0 {
                return Store::empty();
            }
            return Err(StoreError::Outdated { path: path.clone(), found: version });
        }
        Ok(Store { conn, keep_states: KEEP_APPLIED_STATES })
    }

    /// A store that holds nothing, in memory: what a command that only reads sees before the
    /// first pass.
    fn empty() -> Result<Store, StoreError> {
        let mut store = Store { conn: Connection::open_in_memory()?, keep_states: KEEP_APPLIED_STATES };
        store.migrate()?;
        Ok(store)
    }

    /// Keeps the newest `n` applied states whole (at least 1: the one in force).
    pub fn with_retention(mut self, n: usize) -> Store {
        self.keep_states = n.max(1);
        self
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Version { found: version });
        }
        if version == SCHEMA_VERSION {
            // Opening a current store writes nothing.
            return Ok(());
        }
        if version < 1 {
            tx.execute_batch(SCHEMA)?;
        }
        if version < 2 {
            tx.execute_batch(SCHEMA_2)?;
        }
        if version < 3 {
            tx.execute_batch(SCHEMA_3)?;
        }
        if version < 4 {
            tx.execute_batch(SCHEMA_4)?;
        }
        if version < 5 {
            tx.execute_batch(SCHEMA_5)?;
        }
        if version < 6 {
            tx.execute_batch(SCHEMA_6)?;
        }
        if version < 7 {
            tx.execute_batch(usage::SCHEMA_7)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// What is in force now.
    pub fn applied(&self) -> Result<Applied, StoreError> {
        applied_in(&self.conn)
    }

    /// The plan whose state is in force (0 before any) and how many hosts it holds, without
    /// decoding the state: the daemon asks at every pass and rebuilds what it publishes only when
    /// the plan changed.
    pub fn applied_summary(&self) -> Result<(i64, usize), StoreError> {
        let row: Option<(i64, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT plan_id, (SELECT count(*) FROM json_each(state, '$.entries')) FROM applied ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(id, n)| (id, n.unwrap_or(0) as usize)).unwrap_or((0, 0)))
    }

    /// The plan whose state is in force (0 before any), without decoding the state.
    pub fn applied_plan_id(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = self.conn.query_row("SELECT plan_id FROM applied ORDER BY seq DESC LIMIT 1", [], |r| r.get(0)).optional()?;
        Ok(id.unwrap_or(0))
    }

    /// How many plans wait for approval, without decoding them.
    pub fn pending_count(&self) -> Result<usize, StoreError> {
        let n: i64 = self.conn.query_row("SELECT count(*) FROM plans WHERE status = 'pending'", [], |r| r.get(0))?;
        Ok(n as usize)
    }

    /// The state plan `plan_id` put in force, if the store still keeps it whole.
    pub fn applied_state_of(&self, plan_id: i64) -> Result<Option<State>, StoreError> {
        let text: Option<Option<String>> = self
            .conn
            .query_row("SELECT state FROM applied WHERE plan_id = ?1 ORDER BY seq DESC LIMIT 1", [plan_id], |r| r.get(0))
            .optional()?;
        match text.flatten() {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|source| StoreError::Corrupt { what: format!("state applied by plan {plan_id}"), source }),
        }
    }

    /// Every applied state, oldest first: (plan id, when).
    pub fn applied_history(&self) -> Result<Vec<(i64, String)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT plan_id, applied_at FROM applied ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The highest annuaire serial that an applied plan came from: an answer with a lower one is
    /// older than what is in force (a replay, a stale cache) and never applies without approval.
    pub fn highest_applied_serial(&self) -> Result<Option<u64>, StoreError> {
        let serial: Option<i64> =
            self.conn.query_row("SELECT MAX(serial) FROM plans WHERE status = 'applied'", [], |r| r.get(0))?;
        Ok(serial.map(|s| s as u64))
    }

    /// Whether the store has never held a plan: new, or lost and created again.
    pub fn is_new(&self) -> Result<bool, StoreError> {
        let n: i64 = self.conn.query_row("SELECT (SELECT count(*) FROM plans) + (SELECT count(*) FROM applied)", [], |r| r.get(0))?;
        Ok(n == 0)
    }

    /// Records `state`, read back from the outputs after the store was lost, as the state in
    /// force: one applied plan from the empty state, whose source is [`RECOVERY_SOURCE`],
    /// audited `store.recovered` with the files it was read from. Refuses when a state is in
    /// force already.
    pub fn record_recovery(&mut self, state: &State, files: &[String], by: &str, now: &str) -> Result<Plan, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = applied_in(&tx)?.plan_id;
        if current != 0 {
            return Err(StoreError::NotLost { current });
        }
        supersede_open_in(&tx, "the state in force was recovered from the outputs", now)?;
        let diff = HostDiff::between(&State::default(), state).unwrap_or_default();
        let reasons = vec![format!("recovered by {by} from the outputs after the state store was lost: {}", files.join(", "))];
        tx.execute(
            "INSERT INTO plans (created, base, source, serial, status, needs_approval, reasons, diff)
             VALUES (?1, 0, ?2, NULL, ?3, 0, ?4, ?5)",
            params![
                now,
                RECOVERY_SOURCE,
                Status::Applied.as_str(),
                serde_json::to_string(&reasons).expect("strings serialise"),
                serde_json::to_string(&diff).expect("a diff serialises"),
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO applied (plan_id, applied_at, state) VALUES (?1, ?2, ?3)",
            params![id, now, serde_json::to_string(state).expect("a state serialises")],
        )?;
        let detail = format!("{} host(s) recorded as in force, read back from {}", state.len(), files.join(", "));
        audit_in(&tx, now, by, "store.recovered", Some(id), &detail)?;
        tx.commit()?;
        Ok(Plan {
            id,
            created: now.to_owned(),
            base: 0,
            source: RECOVERY_SOURCE.to_owned(),
            serial: None,
            status: Status::Applied,
            needs_approval: false,
            reasons,
            diff,
        })
    }

    /// Whether what is in force rests on a state recovered from the outputs: a recovery was
    /// applied, and no plan applied since closed anything (the first closing after a recovery
    /// is one a person approved).
    pub fn rests_on_recovery(&self) -> Result<bool, StoreError> {
        let recovery: Option<i64> = self.conn.query_row(
            "SELECT max(seq) FROM applied WHERE plan_id IN (SELECT id FROM plans WHERE source = ?1)",
            [RECOVERY_SOURCE],
            |r| r.get(0),
        )?;
        let Some(recovery) = recovery else { return Ok(false) };
        let later: Vec<i64> = {
            let mut stmt = self.conn.prepare("SELECT plan_id FROM applied WHERE seq > ?1 ORDER BY seq")?;
            stmt.query_map([recovery], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        for id in later {
            if self.plan(id)?.diff.closings() > 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Stores new plans computed against the state of plan `base`, in order, each based on the
    /// one before (hybrid mode's openings, then the rest). Every plan still open is superseded:
    /// it was computed from an older read of the source.
    pub fn insert_plans(
        &mut self,
        proposals: &[Proposal],
        base: i64,
        source: &str,
        serial: Option<u64>,
        now: &str,
    ) -> Result<Vec<Plan>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        supersede_open_in(&tx, "a newer plan was computed", now)?;
        let mut plans = Vec::new();
        let mut base = base;
        for p in proposals {
            let plan = insert_plan_in(&tx, p, base, source, serial, now)?;
            base = plan.id;
            plans.push(plan);
        }
        tx.commit()?;
        Ok(plans)
    }

    /// Stores the plans of a new read of the source, in order, each based on the one before,
    /// the first on plan `base`. `kept[i]`, when set, is an open plan whose content is
    /// `proposals[i]` exactly: it keeps its number (and the review the RSSI was asked for),
    /// and is only put on top of the plan before it (audited `plan.kept`). Every other open
    /// plan is superseded, naming the new plans that replace it.
    pub fn replan(
        &mut self,
        proposals: &[Proposal],
        kept: &[Option<i64>],
        base: i64,
        source: &str,
        serial: Option<u64>,
        now: &str,
    ) -> Result<Replanned, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let open = open_plans_in(&tx)?;
        let mut plans = Vec::new();
        let mut base = base;
        for (i, p) in proposals.iter().enumerate() {
            let old = kept.get(i).copied().flatten().and_then(|id| open.iter().find(|o| o.id == id));
            let plan = match old {
                Some(old) => {
                    if old.base != base {
                        tx.execute("UPDATE plans SET base = ?1 WHERE id = ?2", params![base, old.id])?;
                        let detail = format!(
                            "unchanged by the read of {source}: kept, now on top of {} (was computed against {})",
                            base_name(base),
                            base_name(old.base)
                        );
                        audit_in(&tx, now, "rocsync", "plan.kept", Some(old.id), &detail)?;
                    }
                    Plan { base, ..old.clone() }
                }
                None => insert_plan_in(&tx, p, base, source, serial, now)?,
            };
            base = plan.id;
            plans.push(plan);
        }
        let new: Vec<&Plan> = plans.iter().filter(|p| !open.iter().any(|o| o.id == p.id)).collect();
        let mut superseded = Vec::new();
        for old in open.iter().filter(|o| !plans.iter().any(|p| p.id == o.id)) {
            let by = crate::plan::replacements(&old.diff, &new);
            let reason = match by.as_slice() {
                [] => format!("a newer read of {source} no longer asks for it"),
                [one] => format!("replaced by plan {one}, computed from a newer read of {source} (rocsync plan show {one})"),
                many => format!(
                    "replaced by plans {}, computed from a newer read of {source}",
                    many.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                ),
            };
            set_status(&tx, old.id, Status::Superseded)?;
            audit_in(&tx, now, "rocsync", "plan.superseded", Some(old.id), &reason)?;
            superseded.push((old.id, by));
        }
        tx.commit()?;
        Ok(Replanned { plans, superseded })
    }

    /// Marks every open plan superseded, with why; returns their ids.
    pub fn supersede_open(&mut self, reason: &str, now: &str) -> Result<Vec<i64>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids = supersede_open_in(&tx, reason, now)?;
        tx.commit()?;
        Ok(ids)
    }

    pub fn plan(&self, id: i64) -> Result<Plan, StoreError> {
        let mut stmt = self.conn.prepare(&format!("{PLAN_SELECT} WHERE id = ?1"))?;
        let row = stmt.query_row([id], raw_plan).optional()?;
        row.ok_or(StoreError::NoPlan(id))?.decode()
    }

    /// The newest plans first.
    pub fn plans(&self, limit: usize) -> Result<Vec<Plan>, StoreError> {
        let mut stmt = self.conn.prepare(&format!("{PLAN_SELECT} ORDER BY id DESC LIMIT ?1"))?;
        let rows = stmt.query_map([limit as i64], raw_plan)?.collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(RawPlan::decode).collect()
    }

    /// Plans that may still be applied, oldest first.
    pub fn open_plans(&self) -> Result<Vec<Plan>, StoreError> {
        open_plans_in(&self.conn)
    }

    pub fn decisions(&self, plan_id: i64) -> Result<Vec<DecisionRecord>, StoreError> {
        let mut stmt =
            self.conn.prepare("SELECT decision, by, at, comment FROM decisions WHERE plan_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([plan_id], |r| {
            Ok(DecisionRecord { decision: r.get(0)?, by: r.get(1)?, at: r.get(2)?, comment: r.get(3)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records an approval or a rejection of an open plan.
    pub fn decide(
        &mut self,
        id: i64,
        decision: Decision,
        by: &str,
        comment: Option<&str>,
        now: &str,
    ) -> Result<Plan, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let plan = plan_in(&tx, id)?;
        if !plan.status.is_open() {
            // A superseded plan says what replaced it: the plan to look at instead.
            let why = match plan.status {
                Status::Superseded => superseded_why_in(&tx, id)?,
                _ => None,
            };
            let hint = match why {
                Some(why) => format!("{why}; only an open plan can be decided"),
                None => "only an open plan can be decided".into(),
            };
            return Err(StoreError::WrongStatus { id, status: plan.status, hint });
        }
        let (word, status, action) = match decision {
            Decision::Approve => ("approve", Status::Approved, "plan.approved"),
            Decision::Reject => ("reject", Status::Rejected, "plan.rejected"),
        };
        tx.execute(
            "INSERT INTO decisions (plan_id, decision, by, at, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, word, by, now, comment],
        )?;
        set_status(&tx, id, status)?;
        audit_in(&tx, now, by, action, Some(id), comment.unwrap_or(""))?;
        tx.commit()?;
        Ok(Plan { status, ..plan })
    }

    /// Checks that plan `id` may be applied now, on top of what is in force. A stale plan is
    /// marked superseded on the way.
    pub fn check_applicable(&mut self, id: i64, now: &str) -> Result<(Plan, Applied), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let plan = plan_in(&tx, id)?;
        let applied = applied_in(&tx)?;
        match plan.status {
            Status::Ready | Status::Approved => {}
            Status::Pending => {
                return Err(StoreError::WrongStatus {
                    id,
                    status: plan.status,
                    hint: format!("it needs approval first: rocsync approve {id} --by NAME"),
                });
            }
            Status::Superseded => {
                let hint = match superseded_why_in(&tx, id)? {
                    Some(why) => format!("{why}; only a ready or approved plan can be applied"),
                    None => "only a ready or approved plan can be applied".into(),
                };
                return Err(StoreError::WrongStatus { id, status: plan.status, hint });
            }
            status => {
                return Err(StoreError::WrongStatus { id, status, hint: "only a ready or approved plan can be applied".into() });
            }
        }
        if plan.base != applied.plan_id {
            set_status(&tx, id, Status::Superseded)?;
            let detail = format!("stale: computed against plan {}, plan {} is in force", plan.base, applied.plan_id);
            audit_in(&tx, now, "rocsync", "plan.superseded", Some(id), &detail)?;
            tx.commit()?;
            return Err(StoreError::Stale { id, base: plan.base, current: applied.plan_id });
        }
        tx.commit()?;
        Ok((plan, applied))
    }

    /// Records that plan `plan` was enforced, producing `state`. Refuses, and changes nothing,
    /// if another plan was applied in between.
    pub fn commit_apply(&mut self, plan: &Plan, state: &State, actor: &str, now: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = applied_in(&tx)?.plan_id;
        if current != plan.base {
            return Err(StoreError::Stale { id: plan.id, base: plan.base, current });
        }
        tx.execute(
            "INSERT INTO applied (plan_id, applied_at, state) VALUES (?1, ?2, ?3)",
            params![plan.id, now, serde_json::to_string(state).expect("a state serialises")],
        )?;
        // A state of thousands of hosts is a megabyte of JSON: keep the newest ones whole, for
        // rollback, and only the row of the others.
        tx.execute(
            "UPDATE applied SET state = NULL WHERE state IS NOT NULL AND seq <= (SELECT MAX(seq) FROM applied) - ?1",
            [self.keep_states as i64],
        )?;
        set_status(&tx, plan.id, Status::Applied)?;
        let detail = format!("{} change(s); {} host(s) in force", plan.diff.changes.len(), state.len());
        audit_in(&tx, now, actor, "plan.applied", Some(plan.id), &detail)?;
        tx.commit()?;
        Ok(())
    }

    pub fn audit(&mut self, actor: &str, action: &str, plan_id: Option<i64>, detail: &str, now: &str) -> Result<(), StoreError> {
        audit_in(&self.conn, now, actor, action, plan_id, detail)
    }

    /// The newest audit entries, oldest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, at, actor, action, plan_id, detail FROM
             (SELECT * FROM audit ORDER BY id DESC LIMIT ?1) ORDER BY id",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(AuditEntry { id: r.get(0)?, at: r.get(1)?, actor: r.get(2)?, action: r.get(3)?, plan_id: r.get(4)?, detail: r.get(5)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn record_source_read(&mut self, read: &SourceRead) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO source_reads (at, source, ok, serial, hosts, rejected, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                read.at,
                read.source,
                read.ok,
                read.serial.map(|s| s as i64),
                read.hosts.map(|h| h as i64),
                read.rejected.map(|r| r as i64),
                read.error
            ],
        )?;
        if let Some(error) = &read.error {
            audit_in(&tx, &read.at, "rocsync", "source.error", None, error)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps the last good answer of `source`.
    /// An answer identical to the one kept is not written again (a few hundred kilobytes at
    /// every poll for nothing); the kept one keeps its fetch time.
    pub fn cache_answer(&mut self, source: &str, answer: &CachedAnswer) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO source_cache (source, fetched_at, etag, content_type, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (source) DO UPDATE SET fetched_at = ?2, etag = ?3, content_type = ?4, body = ?5
             WHERE body IS NOT excluded.body OR etag IS NOT excluded.etag OR content_type IS NOT excluded.content_type",
            params![source, answer.fetched_at, answer.etag, answer.content_type, answer.body],
        )?;
        Ok(())
    }

    /// The last good answer of `source`, if any.
    pub fn cached_answer(&self, source: &str) -> Result<Option<CachedAnswer>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT fetched_at, etag, content_type, body FROM source_cache WHERE source = ?1",
                [source],
                cached_row,
            )
            .optional()?)
    }

    /// Records a notification once: `false` when its key was already recorded (a duplicate
    /// delivery, or a restart between recording and moving the message).
    pub fn record_notification(&mut self, n: &NotificationRecord, now: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT INTO notifications (key, received_at, origin, sender, subject, verdict, reason, changes, rejected_lines)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (key) DO NOTHING",
            params![n.key, now, n.origin, n.sender, n.subject, n.verdict, n.reason, n.changes, n.rejected_lines],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        for (host, amc, name, effective) in &n.openings {
            tx.execute(
                "INSERT INTO notified_hosts (host, amc, name, effective, message_key) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                params![host, amc, name, effective, n.key],
            )?;
        }
        let detail = format!("{} from {}: {}", n.verdict, n.sender.as_deref().unwrap_or("-"), n.reason.as_deref().unwrap_or(&n.key));
        audit_in(&tx, now, "rocsync", &format!("notification.{}", n.verdict), None, &detail)?;
        tx.commit()?;
        Ok(true)
    }

    /// The verdict a notification was recorded with, if its key was recorded.
    pub fn notification_verdict(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.conn.query_row("SELECT verdict FROM notifications WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Recorded notifications, newest first.
    pub fn notifications(&self, limit: usize) -> Result<Vec<NotificationRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT key, received_at, origin, sender, subject, verdict, reason, changes, rejected_lines
             FROM notifications ORDER BY received_at DESC, rowid DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(NotificationRow {
                key: r.get(0)?,
                received_at: r.get(1)?,
                origin: r.get(2)?,
                sender: r.get(3)?,
                subject: r.get(4)?,
                verdict: r.get(5)?,
                reason: r.get(6)?,
                changes: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or(serde_json::Value::Null),
                rejected_lines: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or(serde_json::Value::Null),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Openings named by notifications and still pending: (host, AMC number, AMC name, date, message).
    pub fn pending_notified_hosts(&self) -> Result<Vec<(String, String, String, String, String)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT host, amc, name, effective, message_key FROM notified_hosts WHERE status = 'pending' ORDER BY host, effective",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sets the status of every pending notified opening of `host` (`rejected`, `listed`,
    /// `closed`).
    pub fn settle_notified_host(&mut self, host: &str, status: &str) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE notified_hosts SET status = ?1 WHERE host = ?2 AND status = 'pending'",
            params![status, host],
        )?)
    }

    /// The resolver's address book (empty before the first resolution).
    pub fn address_book(&self) -> Result<crate::resolve::AddressBook, StoreError> {
        let text: Option<String> = self.conn.query_row("SELECT book FROM address_book WHERE id = 1", [], |r| r.get(0)).optional()?;
        match text {
            None => Ok(crate::resolve::AddressBook::default()),
            Some(t) => serde_json::from_str(&t).map_err(|source| StoreError::Corrupt { what: "address book".into(), source }),
        }
    }

    pub fn save_address_book(&mut self, book: &crate::resolve::AddressBook) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO address_book (id, book) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET book = ?1",
            [serde_json::to_string(book).expect("a book serialises")],
        )?;
        Ok(())
    }

    /// The newest good answer of any source.
    pub fn latest_cached_answer(&self) -> Result<Option<CachedAnswer>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT fetched_at, etag, content_type, body FROM source_cache ORDER BY fetched_at DESC LIMIT 1",
                [],
                cached_row,
            )
            .optional()?)
    }

    /// Whether `action` was audited since `since` (RFC 3339, compared as text).
    pub fn audited_since(&self, action: &str, since: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM audit WHERE action = ?1 AND at >= ?2 LIMIT 1", [action, since], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The newest source read, and the newest successful one.
    /// Each mailbox's last read, with when it was last read well: the notifications' health,
    /// apart from the annuaire's (a mailbox down is not the annuaire down).
    pub fn mailbox_reads(&self) -> Result<Vec<(SourceRead, Option<String>)>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT at, source, ok, error, (SELECT MAX(g.at) FROM source_reads g WHERE g.source = r.source AND g.ok = 1)
             FROM source_reads r WHERE r.id IN (SELECT MAX(id) FROM source_reads WHERE source LIKE '{MAILBOX}%' GROUP BY source)
             ORDER BY r.source"
        ))?;
        let rows = stmt.query_map([], |r| {
            let source: String = r.get(1)?;
            let read = SourceRead {
                at: r.get(0)?,
                source: source.strip_prefix(MAILBOX).unwrap_or(&source).to_owned(),
                ok: r.get(2)?,
                serial: None,
                hosts: None,
                rejected: None,
                error: r.get(3)?,
            };
            Ok((read, r.get::<_, Option<String>>(4)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn last_source_reads(&self) -> Result<(Option<SourceRead>, Option<SourceRead>), StoreError> {
        let query = |filter: &str| -> Result<Option<SourceRead>, StoreError> {
            let sql = format!(
                "SELECT at, source, ok, serial, hosts, rejected, error FROM source_reads {filter} ORDER BY id DESC LIMIT 1"
            );
            Ok(self
                .conn
                .query_row(&sql, [], |r| {
                    Ok(SourceRead {
                        at: r.get(0)?,
                        source: r.get(1)?,
                        ok: r.get(2)?,
                        serial: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
                        hosts: r.get::<_, Option<i64>>(4)?.map(|h| h as usize),
                        rejected: r.get::<_, Option<i64>>(5)?.map(|h| h as usize),
                        error: r.get(6)?,
                    })
                })
                .optional()?)
        };
        Ok((query(&format!("WHERE source NOT LIKE '{MAILBOX}%'"))?, query(&format!("WHERE ok = 1 AND source NOT LIKE '{MAILBOX}%'"))?))
    }
}

const PLAN_SELECT: &str =
    "SELECT id, created, base, source, serial, status, needs_approval, reasons, diff FROM plans";

/// A plan row before its JSON columns are decoded.
struct RawPlan {
    id: i64,
    created: String,
    base: i64,
    source: String,
    serial: Option<i64>,
    status: String,
    needs_approval: bool,
    reasons: String,
    diff: String,
}

fn raw_plan(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawPlan> {
    Ok(RawPlan {
        id: r.get(0)?,
        created: r.get(1)?,
        base: r.get(2)?,
        source: r.get(3)?,
        serial: r.get(4)?,
        status: r.get(5)?,
        needs_approval: r.get(6)?,
        reasons: r.get(7)?,
        diff: r.get(8)?,
    })
}

impl RawPlan {
    fn decode(self) -> Result<Plan, StoreError> {
        let corrupt = |what: &str| {
            let what = format!("{what} of plan {}", self.id);
            move |source| StoreError::Corrupt { what, source }
        };
        let status = Status::parse(&self.status).ok_or_else(|| StoreError::Corrupt {
            what: format!("status of plan {}", self.id),
            source: serde::de::Error::custom(format!("unknown status {:?}", self.status)),
        })?;
        let reasons: Vec<String> = serde_json::from_str(&self.reasons).map_err(corrupt("reasons"))?;
        let diff: HostDiff = serde_json::from_str(&self.diff).map_err(corrupt("diff"))?;
        Ok(Plan {
            id: self.id,
            created: self.created,
            base: self.base,
            source: self.source,
            serial: self.serial.map(|s| s as u64),
            status,
            needs_approval: self.needs_approval,
            reasons,
            diff,
        })
    }
}

/// A `source_cache` row selected as `fetched_at, etag, content_type, body`.
fn cached_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedAnswer> {
    Ok(CachedAnswer { fetched_at: r.get(0)?, etag: r.get(1)?, content_type: r.get(2)?, body: r.get(3)? })
}

fn supersede_open_in(tx: &Transaction<'_>, reason: &str, now: &str) -> Result<Vec<i64>, StoreError> {
    let open: Vec<i64> = {
        let mut stmt = tx.prepare("SELECT id FROM plans WHERE status IN ('pending', 'ready', 'approved')")?;
        stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
    };
    for &id in &open {
        set_status(tx, id, Status::Superseded)?;
        audit_in(tx, now, "rocsync", "plan.superseded", Some(id), reason)?;
    }
    Ok(open)
}

/// Inserts one plan on top of plan `base`, audited `plan.created` (with the hosts that come from
/// the configuration, which hybrid mode applies without approval).
fn insert_plan_in(tx: &Transaction<'_>, p: &Proposal, base: i64, source: &str, serial: Option<u64>, now: &str) -> Result<Plan, StoreError> {
    let status = if p.needs_approval { Status::Pending } else { Status::Ready };
    tx.execute(
        "INSERT INTO plans (created, base, source, serial, status, needs_approval, reasons, diff)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            now,
            base,
            source,
            serial.map(|s| s as i64),
            status.as_str(),
            p.needs_approval,
            serde_json::to_string(&p.reasons).expect("strings serialise"),
            serde_json::to_string(&p.diff).expect("a diff serialises"),
        ],
    )?;
    let id = tx.last_insert_rowid();
    let configured: Vec<&str> = p.diff.configured().into_iter().map(|h| h.as_str()).collect();
    let detail = format!(
        "{} change(s) from {source}{}{}",
        p.diff.changes.len(),
        if configured.is_empty() { String::new() } else { format!("; from the configuration (policy.extra_hosts): {}", configured.join(", ")) },
        if p.needs_approval { format!("; needs approval: {}", p.reasons.join("; ")) } else { String::new() }
    );
    audit_in(tx, now, "rocsync", "plan.created", Some(id), &detail)?;
    Ok(Plan {
        id,
        created: now.to_owned(),
        base,
        source: source.to_owned(),
        serial,
        status,
        needs_approval: p.needs_approval,
        reasons: p.reasons.clone(),
        diff: p.diff.clone(),
    })
}

/// Plans that may still be applied, oldest first.
fn open_plans_in(conn: &Connection) -> Result<Vec<Plan>, StoreError> {
    let mut stmt = conn.prepare(&format!("{PLAN_SELECT} WHERE status IN ('pending', 'ready', 'approved') ORDER BY id"))?;
    let rows = stmt.query_map([], raw_plan)?.collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(RawPlan::decode).collect()
}

/// Why plan `id` was superseded, as the audit log recorded it last.
fn superseded_why_in(conn: &Connection, id: i64) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT detail FROM audit WHERE action = 'plan.superseded' AND plan_id = ?1 ORDER BY id DESC LIMIT 1",
            [id],
            |r| r.get(0),
        )
        .optional()?)
}

/// `plan 4`, or `the empty state`.
fn base_name(base: i64) -> String {
    if base == 0 { "the empty state".into() } else { format!("plan {base}") }
}

fn plan_in(tx: &Transaction<'_>, id: i64) -> Result<Plan, StoreError> {
    let mut stmt = tx.prepare(&format!("{PLAN_SELECT} WHERE id = ?1"))?;
    let row = stmt.query_row([id], raw_plan).optional()?;
    row.ok_or(StoreError::NoPlan(id))?.decode()
}

fn applied_in(conn: &Connection) -> Result<Applied, StoreError> {
    let row: Option<(i64, String, Option<String>)> = conn
        .query_row("SELECT plan_id, applied_at, state FROM applied ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    match row {
        None => Ok(Applied::default()),
        Some((plan_id, at, state)) => {
            let state = serde_json::from_str(state.as_deref().unwrap_or("null"))
                .map_err(|source| StoreError::Corrupt { what: format!("state applied by plan {plan_id}"), source })?;
            Ok(Applied { plan_id, at: Some(at), state })
        }
    }
}

fn set_status(conn: &Connection, id: i64, status: Status) -> Result<(), StoreError> {
    conn.execute("UPDATE plans SET status = ?1 WHERE id = ?2", params![status.as_str(), id])?;
    Ok(())
}

fn audit_in(conn: &Connection, now: &str, actor: &str, action: &str, plan_id: Option<i64>, detail: &str) -> Result<(), StoreError> {
    // The one gate of the audit log: who acted may come from a command line or the environment,
    // and no line of the log may forge another (escaping what is already escaped changes nothing).
    let (actor, detail) = (crate::text::excerpt(actor, 200), crate::text::escape(detail));
    conn.execute(
        "INSERT INTO audit (at, actor, action, plan_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now, actor, action, plan_id, detail.as_ref()],
    )?;
    Ok(())
}

/// Creates the state directory readable by its owner only, 0700 whatever the umask (its missing
/// parents get the usual mode: the exports may live beside it). Every path that creates the
/// state directory goes through here. An existing one is left as it is, with a warning when
/// others may enter it: it may be shared on purpose, and the files rocsync keeps in it are its
/// owner's only anyway.
pub fn create_state_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        // The umask may have taken bits off 0700: the mode is set as it should be.
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {
            let mode = std::fs::metadata(dir).map_or(0o700, |m| m.permissions().mode() & 0o7777);
            if mode & 0o077 != 0 {
                warn!(dir = %dir.display(), "The state directory is open to other users (mode {mode:o}); the files in it are not. `chmod 0700` it unless that is meant.");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The files in the state directory that rocsync writes: the database, SQLite's, the locks.
const STATE_FILES: [&str; 5] = [DB_FILE, "state.db-wal", "state.db-shm", "apply.lock", "daemon.lock"];

/// Refuses, saying whose it is and what to do, a state directory or a file in it that this
/// process may not write. Decided from owners and modes, as access(2) does, without opening
/// the files: closing a descriptor of the database would drop the SQLite locks this process
/// holds on it through another connection.
fn check_writable(state_dir: &Path, me: &Ids) -> Result<(), StoreError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let paths = std::iter::once(state_dir.to_owned()).chain(STATE_FILES.iter().map(|f| state_dir.join(f)));
    for path in paths {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        // Only another user's: a file of ours made read-only (a full disk, on purpose) fails
        // as it is, with its own error.
        if meta.uid() != me.uid && !me.may_write(meta.uid(), meta.gid(), meta.permissions().mode()) {
            return Err(not_writable(state_dir, &path, meta.uid(), me.uid));
        }
    }
    Ok(())
}

/// The error for `path` (owned by `owner`), which this process (`me`) may not write.
fn not_writable(state_dir: &Path, path: &Path, owner: u32, me: u32) -> StoreError {
    use std::os::unix::fs::MetadataExt;
    let (owner_name, me_name) = (user_name(owner), user_name(me));
    let dir_owner = std::fs::metadata(state_dir).map(|m| m.uid()).ok();
    let message = match dir_owner {
        // The directory is ours, a file in it is not: a command run as another user made it.
        Some(d) if d == me => format!(
            "{} belongs to {owner_name} (uid {owner}), not to {me_name}, who runs this rocsync and owns the state directory: it cannot \
             write it (SQLite: \"attempt to write a readonly database\"). A command run as {owner_name} made it. Give the state \
             back to {me_name}: `chown -R {me_name}: {}`; then run rocsync's commands as {me_name}: `runuser -u {me_name} -- rocsync …` \
             (or `sudo -u {me_name} rocsync …`)",
            path.display(),
            state_dir.display()
        ),
        Some(d) => {
            let dir_user = user_name(d);
            format!(
                "{} belongs to {owner_name} (uid {owner}), and this rocsync runs as {me_name}: it cannot write the state there. \
                 Run rocsync as the state directory's user: `runuser -u {dir_user} -- rocsync …` (or `sudo -u {dir_user} rocsync …`)",
                path.display()
            )
        }
        None => format!("{} belongs to {owner_name} (uid {owner}), and this rocsync runs as {me_name}: it cannot write it", path.display()),
    };
    StoreError::NotWritable { path: path.to_owned(), message }
}

/// Who this process is to the file system: its effective user and groups, from
/// `/proc/self/status` (no unsafe call to geteuid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Ids {
    /// This process's; `None` when `/proc` cannot tell.
    pub fn current() -> Option<Ids> {
        Ids::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// From the text of `/proc/PID/status`: the effective ids are the second of `Uid:` and `Gid:`.
    fn parse(status: &str) -> Option<Ids> {
        let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(|rest| rest.split_whitespace().filter_map(|n| n.parse::<u32>().ok()).collect::<Vec<_>>());
        let uid = *field("Uid:")?.get(1)?;
        let gid = *field("Gid:")?.get(1)?;
        let groups = field("Groups:").unwrap_or_default();
        Some(Ids { uid, gid, groups })
    }

    /// Whether a file owned by `uid`:`gid` with `mode` may be written, as access(2) decides it
    /// (root may write anything).
    pub fn may_write(&self, uid: u32, gid: u32, mode: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        if uid == self.uid {
            return mode & 0o200 != 0;
        }
        if gid == self.gid || self.groups.contains(&gid) {
            return mode & 0o020 != 0;
        }
        mode & 0o002 != 0
    }
}

/// The name of user `uid` from `/etc/passwd`, or the number when it has none.
pub fn user_name(uid: u32) -> String {
    crate::accounts::user_name(uid).unwrap_or_else(|| uid.to_string())
}

/// Creates `path` empty with mode 0600 whatever the umask, or restricts an existing one to its
/// owner: SQLite then gives the same mode to the `-wal` and `-shm` files it creates beside it.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(file) => file.set_permissions(std::fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            restrict(path, 0o600);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Takes from `path` the permission bits beyond `allowed` (a file or directory an older rocsync
/// left readable by others). A missing file stays missing; a failure (another owner) is logged:
/// the command still runs.
fn restrict(path: &Path, allowed: u32) {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(_) => return,
    };
    if mode & !allowed == 0 {
        return;
    }
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & allowed)) {
        Ok(()) => warn!(path = %path.display(), "Restricted to its owner: mode {:o}, was {mode:o}.", mode & allowed),
        Err(e) => warn!(path = %path.display(), "Readable by others (mode {mode:o}), and cannot be restricted: {e}."),
    }
}

/// `state.db-wal` for `state.db` and `-wal`.
fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The `file:` URI of `path`, every byte but the unreserved ones and `/` percent-encoded.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// A read-only connection to `path` with the URI parameters `params`, its first read done:
/// SQLite opens lazily, and the errors of setting up the WAL index come out here.
fn read_connection(path: &Path, params: &str) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(format!("{}?{params}", file_uri(path)), flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
}

/// Whether a read failed because SQLite had to write beside the database: the first reader
/// of a WAL database creates and sizes the `-wal` and `-shm` files.
fn needs_to_write(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen | ErrorCode::ReadOnly | ErrorCode::PermissionDenied)
    )
}

/// Reads a WAL database without writing beside it. Through the `-shm` file if there is one,
/// opened read-only (SQLite then reads the WAL into memory when no writer holds the index);
/// else, when the WAL holds nothing, from the database file alone (`immutable`: no locks, no
/// index). Otherwise `first` stands.
fn read_without_writing(path: &Path, first: rusqlite::Error) -> rusqlite::Result<Connection> {
    let mut last = first;
    if sidecar(path, "-shm").exists() {
        match read_connection(path, "mode=ro&readonly_shm=1") {
            Ok(conn) => return Ok(conn),
            Err(e) => last = e,
        }
    }
    let wal_empty = std::fs::metadata(sidecar(path, "-wal")).map_or(true, |m| m.len() == 0);
    if wal_empty {
        return read_connection(path, "mode=ro&immutable=1");
    }
    Err(last)
}

/// Where a followed log was read up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPosition {
    pub inode: u64,
    pub offset: u64,
    /// The file's first line, to recognise a file truncated and written again past `offset`.
    pub first_line: String,
}

/// What [`Store::replan`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replanned {
    /// The open plans of the read, in the order they apply: kept ones and new ones.
    pub plans: Vec<Plan>,
    /// The plans superseded, each with the new plans that replace it (none when the newer read
    /// no longer asks for what it did).
    pub superseded: Vec<(i64, Vec<i64>)>,
}

/// One alert of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedAlert {
    pub id: i64,
    pub alert: Alert,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub attempts: u32,
    pub status: String,
    /// Occurrences after it was sent, within the deduplication window.
    pub after_sent: u64,
}

/// What [`Store::raise`] did with an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// A new alert was queued.
    Queued(i64),
    /// It was added to the count of an alert not sent yet.
    Counted(i64),
    /// The same alert was sent within the window: only counted.
    Deduplicated(i64),
}

impl Store {
    pub fn log_position(&self, path: &str) -> Result<Option<LogPosition>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT inode, offset, first_line FROM log_positions WHERE path = ?1", [path], |r| {
                Ok(LogPosition { inode: r.get::<_, i64>(0)? as u64, offset: r.get::<_, i64>(1)? as u64, first_line: r.get(2)? })
            })
            .optional()?)
    }

    /// Records the alerts that lines of a log raised and where the log was read up to, in one
    /// transaction: after a crash, the lines are either read with their alerts, or not read.
    pub fn record_log(
        &mut self,
        path: &str,
        position: &LogPosition,
        alerts: &[(Alert, String)],
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<Raised>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut raised = Vec::new();
        for (alert, at) in alerts {
            raised.push(raise_in(&tx, alert, at, window_ms, now_ms)?);
        }
        tx.execute(
            "INSERT INTO log_positions (path, inode, offset, first_line) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (path) DO UPDATE SET inode = ?2, offset = ?3, first_line = ?4",
            params![path, position.inode as i64, position.offset as i64, position.first_line],
        )?;
        tx.commit()?;
        Ok(raised)
    }

    /// Queues an alert, or counts it against the same one within `window_ms`.
    pub fn raise(&mut self, alert: &Alert, at: &str, window_ms: u64, now_ms: u64) -> Result<Raised, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = raise_in(&tx, alert, at, window_ms, now_ms)?;
        tx.commit()?;
        Ok(r)
    }

    /// Alerts whose time has come, oldest first.
    pub fn due_alerts(&self, now_ms: u64) -> Result<Vec<QueuedAlert>, StoreError> {
        self.alerts_where("status = 'queued' AND send_after_ms <= ?1 ORDER BY id", now_ms as i64)
    }

    /// Alerts held back by the hourly limit.
    pub fn held_alerts(&self) -> Result<Vec<QueuedAlert>, StoreError> {
        self.alerts_where("status = 'held' AND ?1 = ?1 ORDER BY id", 0)
    }

    /// The newest alerts, newest first.
    pub fn recent_alerts(&self, limit: usize) -> Result<Vec<QueuedAlert>, StoreError> {
        self.alerts_where("?1 = ?1 ORDER BY id DESC LIMIT ?1", limit as i64)
    }

    fn alerts_where(&self, clause: &str, arg: i64) -> Result<Vec<QueuedAlert>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, detail, count, first_seen, last_seen, attempts, status, after_sent FROM alerts WHERE {clause}"
        ))?;
        let rows = stmt
            .query_map([arg], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, detail, count, first_seen, last_seen, attempts, status, after_sent)| {
                let alert = serde_json::from_str(&detail).map_err(|source| StoreError::Corrupt { what: format!("alert {id}"), source })?;
                Ok(QueuedAlert {
                    id,
                    alert,
                    count: count as u64,
                    first_seen,
                    last_seen,
                    attempts: attempts as u32,
                    status,
                    after_sent: after_sent as u64,
                })
            })
            .collect()
    }

    pub fn alert_sent(&mut self, id: i64, at: &str) -> Result<(), StoreError> {
        self.conn.execute("UPDATE alerts SET status = 'sent', sent_at = ?2, last_error = NULL WHERE id = ?1", params![id, at])?;
        Ok(())
    }

    /// A failed attempt: the alert stays queued and is tried again at `retry_ms`.
    pub fn alert_failed(&mut self, id: i64, error: &str, retry_ms: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE alerts SET attempts = attempts + 1, last_error = ?2, send_after_ms = ?3 WHERE id = ?1",
            params![id, error, retry_ms as i64],
        )?;
        Ok(())
    }

    /// Sets the status of an alert (`held`, `digested`, `dropped`).
    pub fn alert_status(&mut self, id: i64, status: &str) -> Result<(), StoreError> {
        self.conn.execute("UPDATE alerts SET status = ?2 WHERE id = ?1", params![id, status])?;
        Ok(())
    }

    /// The blocked-request alerts sent since `since` (RFC 3339): what `alerts.max_per_hour`
    /// counts (review mails, failures and digests never hold back the helpdesk's alert).
    pub fn blocked_alerts_sent_since(&self, since: &str) -> Result<Vec<Alert>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT id, detail FROM alerts WHERE kind = 'blocked' AND status = 'sent' AND sent_at >= ?1")?;
        let rows = stmt.query_map([since], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut alerts = Vec::new();
        for row in rows {
            let (id, detail) = row?;
            alerts.push(serde_json::from_str(&detail).map_err(|source| StoreError::Corrupt { what: format!("alert {id}"), source })?);
        }
        Ok(alerts)
    }

    /// The newest alert raised with this key that was not dropped, with when it was raised
    /// (milliseconds since the epoch).
    pub fn last_raised(&self, key: &str) -> Result<Option<(u64, Alert)>, StoreError> {
        let row: Option<(i64, i64, String)> = self
            .conn
            .query_row(
                "SELECT id, created_ms, detail FROM alerts WHERE key = ?1 AND status != 'dropped' ORDER BY id DESC LIMIT 1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((id, created_ms, detail)) = row else { return Ok(None) };
        let alert = serde_json::from_str(&detail).map_err(|source| StoreError::Corrupt { what: format!("alert {id}"), source })?;
        Ok(Some((created_ms as u64, alert)))
    }

    /// Whether an alert with this key was raised since `since_ms` (to raise some alerts once).
    pub fn alert_raised_since(&self, key: &str, since_ms: u64) -> Result<bool, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM alerts WHERE key = ?1 AND created_ms >= ?2",
            params![key, since_ms as i64],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

fn raise_in(tx: &rusqlite::Transaction<'_>, alert: &Alert, at: &str, window_ms: u64, now_ms: u64) -> Result<Raised, StoreError> {
    let key = alert.key();
    let since = now_ms.saturating_sub(window_ms) as i64;
    let same: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, status FROM alerts WHERE key = ?1 AND created_ms >= ?2 AND status != 'dropped' ORDER BY id DESC LIMIT 1",
            params![key, since],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match same {
        Some((id, status)) if status == "queued" || status == "held" => {
            tx.execute("UPDATE alerts SET count = count + 1, last_seen = ?2 WHERE id = ?1", params![id, at])?;
            Ok(Raised::Counted(id))
        }
        Some((id, _)) => {
            tx.execute("UPDATE alerts SET after_sent = after_sent + 1, last_seen = ?2 WHERE id = ?1", params![id, at])?;
            Ok(Raised::Deduplicated(id))
        }
        None => {
            let detail = serde_json::to_string(alert).map_err(|source| StoreError::Corrupt { what: "alert".into(), source })?;
            let roles = serde_json::to_string(&alert.roles()).map_err(|source| StoreError::Corrupt { what: "alert".into(), source })?;
            tx.execute(
                "INSERT INTO alerts (kind, key, roles, detail, created_ms, send_after_ms, count, first_seen, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?7)",
                params![alert.kind(), key, roles, detail, now_ms as i64, (now_ms + alert.gather_ms()) as i64, at],
            )?;
            Ok(Raised::Queued(tx.last_insert_rowid()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Mode, propose};
    use crate::testing::{ctx, state};

    #[test]
    fn plan_approve_apply_and_audit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("state")).unwrap();
        assert_eq!(store.applied().unwrap(), Applied::default());
        let proposals = propose(&State::default(), &state("urls-v1.json"), &ctx(Mode::Review));
        let plans = store.insert_plans(&proposals, 0, "file:v1", Some(4182), "t1").unwrap();
        assert_eq!(plans[0].status, Status::Pending);
        let err = store.check_applicable(plans[0].id, "t2").unwrap_err();
        assert!(matches!(err, StoreError::WrongStatus { status: Status::Pending, .. }), "{err}");
        store.decide(plans[0].id, Decision::Approve, "rssi", Some("vu"), "t2").unwrap();
        let (plan, applied) = store.check_applicable(plans[0].id, "t3").unwrap();
        let next = plan.diff.apply_to(&applied.state, "t3");
        store.commit_apply(&plan, &next, "rssi", "t3").unwrap();
        assert_eq!(store.applied().unwrap().state, next);
        assert_eq!(store.plan(plan.id).unwrap().status, Status::Applied);
        assert_eq!(store.decisions(plan.id).unwrap()[0].comment.as_deref(), Some("vu"));
        let actions: Vec<String> = store.audit_log(10).unwrap().into_iter().map(|a| a.action).collect();
        assert_eq!(actions, ["plan.created", "plan.approved", "plan.applied"]);
        // Applying it again is refused.
        assert!(matches!(store.check_applicable(plan.id, "t4"), Err(StoreError::WrongStatus { .. })));
    }

    #[test]
    fn only_the_newest_states_are_kept_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap().with_retention(2);
        let (v1, v2) = (state("urls-v1.json"), state("urls-v2.json"));
        let mut current = State::default();
        for (i, target) in [&v1, &v2, &v1, &v2].into_iter().enumerate() {
            let proposals = propose(&current, target, &ctx(Mode::Auto));
            let base = store.applied().unwrap().plan_id;
            let plan = store.insert_plans(&proposals, base, "x", None, &format!("t{i}")).unwrap().remove(0);
            current = plan.diff.apply_to(&current, "t");
            store.commit_apply(&plan, &current, "x", "t").unwrap();
        }
        let kept: Vec<bool> = {
            let mut stmt = store.conn.prepare("SELECT state IS NOT NULL FROM applied ORDER BY seq").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
        };
        assert_eq!(kept, [false, false, true, true]);
        assert_eq!(store.applied().unwrap().state, current);
        assert_eq!(store.applied_history().unwrap().len(), 4);
    }

    #[test]
    fn audit_log_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.audit("me", "test", None, "x", "t").unwrap();
        let err = store.conn.execute("DELETE FROM audit", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        let err = store.conn.execute("UPDATE audit SET actor = 'other'", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }

    #[test]
    fn stale_plans_are_superseded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let v1 = propose(&State::default(), &state("urls-v1.json"), &ctx(Mode::Auto));
        let first = store.insert_plans(&v1, 0, "a", None, "t1").unwrap();
        let second = store.insert_plans(&v1, 0, "a", None, "t2").unwrap();
        assert_eq!(store.plan(first[0].id).unwrap().status, Status::Superseded);
        let (plan, applied) = store.check_applicable(second[0].id, "t3").unwrap();
        // Someone applied another plan meanwhile: the commit must refuse.
        let mut moved = plan.clone();
        moved.base = 99;
        assert!(matches!(store.commit_apply(&moved, &applied.state, "x", "t3"), Err(StoreError::Stale { .. })));
        assert_eq!(store.applied().unwrap().plan_id, 0);
    }

    /// Issue 11, item 3: every read rebuilt the plans, so a plan left waiting got a new number
    /// and a new mail at each annuaire change. One whose content did not change keeps its
    /// number; the others are superseded naming what replaced them, and deciding one says so.
    #[test]
    fn replanning_keeps_unchanged_plans_and_names_their_replacements() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let proposals = propose(&state("urls-v1.json"), &state("urls-v2.json"), &ctx(Mode::Hybrid));
        assert_eq!(proposals.len(), 2, "the openings, then the closing that waits");
        let first = store.replan(&proposals, &[None, None], 0, "a", None, "t1").unwrap();
        assert!(first.superseded.is_empty());
        let (openings, closing) = (first.plans[0].id, first.plans[1].id);
        // A newer read: other openings, the same closing.
        let mut again = proposals.clone();
        again[0].diff.changes.pop();
        let second = store.replan(&again, &[None, Some(closing)], 0, "b", None, "t2").unwrap();
        let new_openings = second.plans[0].id;
        assert_eq!(second.plans[1].id, closing, "kept");
        assert_eq!(store.plan(closing).unwrap().base, new_openings, "now on top of the new openings");
        assert_eq!(store.plan(closing).unwrap().status, Status::Pending);
        assert_eq!(second.superseded, [(openings, vec![new_openings])]);
        let err = store.decide(openings, Decision::Approve, "rssi", None, "t3").unwrap_err().to_string();
        assert!(err.contains(&format!("plan {openings} is superseded; replaced by plan {new_openings}")), "{err}");
        let actions: Vec<String> = store.audit_log(20).unwrap().into_iter().map(|a| a.action).collect();
        assert!(actions.contains(&"plan.kept".to_owned()), "{actions:?}");
    }

    #[test]
    fn hybrid_plans_chain_their_bases() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let proposals = propose(&state("urls-v1.json"), &state("urls-v2.json"), &ctx(Mode::Hybrid));
        let plans = store.insert_plans(&proposals, 7, "a", None, "t").unwrap();
        assert_eq!((plans[0].base, plans[1].base), (7, plans[0].id));
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.pragma_update(None, "user_version", 9).unwrap();
        drop(conn);
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Version { found: 9 })));
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn the_state_directory_and_database_are_their_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut store = Store::open(&state).unwrap();
        store.audit("me", "test", None, "x", "t").unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(DB_FILE)), 0o600);
        // The WAL and its index exist while the connection is open.
        assert_eq!(mode(&state.join("state.db-wal")), 0o600);
        assert_eq!(mode(&state.join("state.db-shm")), 0o600);
        drop(store);
        // A database an older rocsync left readable by others is restricted; a directory is
        // left as it is (it may be shared on purpose).
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(state.join(DB_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&state).unwrap();
        assert_eq!((mode(&state), mode(&state.join(DB_FILE))), (0o755, 0o600));
        assert_eq!(store.audit_log(5).unwrap()[0].action, "test");
    }

    #[test]
    fn a_read_only_open_creates_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let empty = Store::open_read_only(&state).unwrap();
        assert!(empty.is_new().unwrap() && empty.audit_log(5).unwrap().is_empty());
        assert!(!state.exists(), "a command that only reads creates no state directory");
        let mut store = Store::open(&state).unwrap();
        let proposals = propose(&State::default(), &state_of_fixture(), &ctx(Mode::Auto));
        let plan = store.insert_plans(&proposals, 0, "file:v1", Some(4182), "t1").unwrap().remove(0);
        store.commit_apply(&plan, &plan.diff.apply_to(&State::default(), "t1"), "x", "t1").unwrap();
        drop(store);
        let before = std::fs::read(state.join(DB_FILE)).unwrap();
        let mut reader = Store::open_read_only(&state).unwrap();
        assert_eq!(reader.applied().unwrap().plan_id, plan.id);
        assert_eq!(reader.plans(10).unwrap().len(), 1);
        assert!(!reader.is_new().unwrap());
        let err = reader.audit("me", "test", None, "x", "t2").unwrap_err();
        assert!(err.to_string().contains("query failed"), "{err}");
        drop(reader);
        assert_eq!(std::fs::read(state.join(DB_FILE)).unwrap(), before, "the database is as it was");
        // A database created and never written reads as empty.
        let fresh = dir.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::write(fresh.join(DB_FILE), b"").unwrap();
        assert!(Store::open_read_only(&fresh).unwrap().is_new().unwrap());
    }

    fn state_of_fixture() -> State {
        state("urls-v1.json")
    }

    #[test]
    fn an_older_schema_is_not_migrated_by_a_read_only_open() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(SCHEMA_2).unwrap();
        conn.execute_batch(SCHEMA_3).unwrap();
        conn.execute_batch(SCHEMA_4).unwrap();
        conn.pragma_update(None, "user_version", 4).unwrap();
        drop(conn);
        let err = Store::open_read_only(dir.path()).err().expect("refused");
        assert!(matches!(err, StoreError::Outdated { found: 4, .. }), "{err}");
        assert!(err.to_string().contains(&format!("older than this rocsync's {SCHEMA_VERSION}")), "{err}");
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, 4, "not migrated");
    }

    #[test]
    fn a_recovery_is_an_applied_plan_audited_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert!(store.is_new().unwrap());
        let recovered = state("urls-v1.json");
        let files = ["out/squid.acl (plan 7)".to_owned()];
        let plan = store.record_recovery(&recovered, &files, "rssi", "t1").unwrap();
        assert_eq!((plan.status, plan.base, plan.source.as_str()), (Status::Applied, 0, RECOVERY_SOURCE));
        assert_eq!(store.applied().unwrap(), Applied { plan_id: plan.id, at: Some("t1".into()), state: recovered.clone() });
        assert_eq!(store.plan(plan.id).unwrap(), plan);
        let audit = store.audit_log(5).unwrap();
        assert_eq!((audit[0].action.as_str(), audit[0].actor.as_str()), ("store.recovered", "rssi"));
        assert!(audit[0].detail.contains("12 host(s)") && audit[0].detail.contains("out/squid.acl (plan 7)"), "{}", audit[0].detail);
        assert!(!store.is_new().unwrap());
        let again = store.record_recovery(&recovered, &files, "rssi", "t2").unwrap_err();
        assert!(matches!(again, StoreError::NotLost { current } if current == plan.id), "{again}");
    }

    #[test]
    fn closings_rest_on_a_recovery_until_one_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let (v1, v2) = (state("urls-v1.json"), state("urls-v2.json"));
        assert!(!store.rests_on_recovery().unwrap(), "no recovery");
        let recovery = store.record_recovery(&v1, &["out/x".to_owned()], "rssi", "t1").unwrap();
        assert!(store.rests_on_recovery().unwrap());
        // Hybrid mode: the openings apply and still rest on the recovery; the closing, once
        // applied, ends it.
        let plans = store.insert_plans(&propose(&v1, &v2, &ctx(Mode::Hybrid)), recovery.id, "file:v2", None, "t2").unwrap();
        let mut current = v1.clone();
        for (i, plan) in plans.iter().enumerate() {
            let next = plan.diff.apply_to(&current, "t3");
            store.commit_apply(plan, &next, "rssi", "t3").unwrap();
            current = next;
            assert_eq!(store.rests_on_recovery().unwrap(), i == 0, "after plan {}", plan.id);
        }
    }

    #[test]
    fn file_uris_escape_what_sqlite_would_read() {
        assert_eq!(file_uri(Path::new("/var/lib/rocsync/state.db")), "file:/var/lib/rocsync/state.db");
        assert_eq!(file_uri(Path::new("a b/%x?y#z.db")), "file:a%20b/%25x%3Fy%23z.db");
    }

    #[test]
    fn who_may_write_is_decided_as_access_does() {
        let status = "Name:\trocsync\nUid:\t0\t998\t998\t998\nGid:\t0\t997\t997\t997\nGroups:\t4 997 \n";
        let me = Ids::parse(status).unwrap();
        assert_eq!(me, Ids { uid: 998, gid: 997, groups: vec![4, 997] }, "the effective ids, not the real ones");
        assert!(me.may_write(998, 997, 0o600));
        assert!(!me.may_write(0, 0, 0o600), "root's state.db, 0600: \"attempt to write a readonly database\"");
        assert!(!me.may_write(0, 0, 0o644));
        assert!(me.may_write(0, 4, 0o660), "through a supplementary group");
        assert!(!me.may_write(998, 997, 0o400), "the owner's bits decide for the owner");
        let root = Ids { uid: 0, gid: 0, groups: vec![] };
        assert!(root.may_write(998, 997, 0o400));
        assert_eq!(Ids::parse("Name:\tx\n"), None);
    }


    /// `rocsync poll` run as root before the service's first start left a root-owned state.db;
    /// the service said only "attempt to write a readonly database", with no path and no hint.
    #[test]
    fn a_state_file_of_another_user_is_named_with_its_owner_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), b"").unwrap();
        let me = Ids::current().unwrap();
        assert!(check_writable(dir.path(), &me).is_ok(), "our own files");
        // Someone else, who may not write what this test's user made.
        let other = Ids { uid: me.uid + 4242, gid: me.gid + 4242, groups: vec![] };
        let err = check_writable(dir.path(), &other).unwrap_err().to_string();
        let mine = user_name(me.uid);
        assert!(err.contains(&format!("belongs to {mine} (uid {})", me.uid)), "{err}");
        assert!(err.contains(&format!("runuser -u {mine} -- rocsync")), "run as the directory's user: {err}");
        if me.uid == 0 {
            // The service user's directory, root's database in it: chown it back.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(other.uid), Some(other.gid)).unwrap();
            let err = check_writable(dir.path(), &other).unwrap_err();
            let StoreError::NotWritable { path, message } = &err else { panic!("{err}") };
            assert_eq!(path, &dir.path().join(DB_FILE));
            let service = user_name(other.uid);
            assert!(message.contains(&format!("chown -R {service}: {}", dir.path().display())), "{message}");
            assert!(message.contains(&format!("runuser -u {service} -- rocsync")), "{message}");
            assert!(message.contains("belongs to root (uid 0)"), "{message}");
        }
    }

    #[test]
    fn a_version_1_store_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute("INSERT INTO audit (at, actor, action, detail) VALUES ('t', 'a', 'old', '')", []).unwrap();
        drop(conn);
        let mut store = Store::open(dir.path()).unwrap();
        let cached = CachedAnswer { fetched_at: "t".into(), etag: Some("\"x\"".into()), content_type: None, body: b"{}".to_vec() };
        store.cache_answer("https://a.test/", &cached).unwrap();
        assert_eq!(store.cached_answer("https://a.test/").unwrap(), Some(cached));
        assert_eq!(store.audit_log(5).unwrap()[0].action, "old");
    }

    /// The same answer at every poll was written again whole each time.
    #[test]
    fn an_unchanged_answer_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let first = CachedAnswer { fetched_at: "t1".into(), etag: Some("\"x\"".into()), content_type: None, body: b"{}".to_vec() };
        store.cache_answer("https://a.test/", &first).unwrap();
        store.cache_answer("https://a.test/", &CachedAnswer { fetched_at: "t2".into(), ..first.clone() }).unwrap();
        assert_eq!(store.cached_answer("https://a.test/").unwrap().unwrap().fetched_at, "t1", "kept as it was");
        let changed = CachedAnswer { fetched_at: "t3".into(), body: b"{\"a\":1}".to_vec(), ..first.clone() };
        store.cache_answer("https://a.test/", &changed).unwrap();
        assert_eq!(store.cached_answer("https://a.test/").unwrap(), Some(changed));
    }
}
