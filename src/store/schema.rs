//! The database's tables and their migrations (`PRAGMA user_version`), and opening it: for
//! writing (created, its modes set, migrated) or to read only (nothing created or written).

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::files::{Ids, check_writable, create_private_file, create_state_dir, needs_to_write, read_connection, read_without_writing, restrict, sidecar};
use super::{DB_FILE, KEEP_APPLIED_STATES, Store, StoreError};

/// The schema this rocsync writes; a newer one is refused, an older one migrated by a command
/// that writes.
pub(super) const SCHEMA_VERSION: i64 = 7;

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
            tx.execute_batch(super::usage::SCHEMA_7)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::State;
    use crate::plan::{Mode, propose};
    use crate::store::CachedAnswer;
    use crate::testing::{ctx, state};

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.pragma_update(None, "user_version", 9).unwrap();
        drop(conn);
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Version { found: 9 })));
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
}
