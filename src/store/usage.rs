//! What usage counting keeps in the store (schema version 7): requests per opening, per day,
//! per client address ([`crate::usage`]), since when they are counted, and the AMCs whose
//! direct openings a `plan --rpn-migration` closes.
//!
//! The counts of a batch of log lines are added in the transaction that moves the log's
//! position ([`Store::record_log_with_usage`]): after a crash the lines are either counted
//! and read, or neither, never counted twice. Rows older than [`HISTORY_DAYS`] go in the same
//! transaction.

use std::collections::BTreeSet;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{LogPosition, Raised, Store, StoreError, audit_in, raise_in};
use crate::alerts::Alert;
use crate::amc::AmcNumber;
use crate::usage::{Counts, HISTORY_DAYS, Row, Tally, day_of};

/// Version 7: requests counted per opening and day, and the RPN migration's AMCs. A migrated
/// AMC stays migrated unless the plan that closed it was rejected (`plan_id` NULL: recorded,
/// the plan not stored yet or nothing left to close).
pub(super) const SCHEMA_7: &str = r#"
CREATE TABLE opening_usage (
    host TEXT NOT NULL,
    day INTEGER NOT NULL,
    client TEXT NOT NULL,
    requests INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    last_allowed INTEGER,
    PRIMARY KEY (host, day, client)
);
CREATE INDEX opening_usage_by_day ON opening_usage (day);
CREATE TABLE usage_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE rpn_migrations (
    amc TEXT NOT NULL,
    plan_id INTEGER,
    at TEXT NOT NULL,
    by TEXT NOT NULL
);
"#;

impl Store {
    /// [`Store::record_log`] with the requests the lines told of: alerts, counts and the log's
    /// new position in one transaction. `now_s` (Unix seconds, [`crate::usage::now`]) marks
    /// when counting began, the first time, and prunes what is older than the history.
    #[allow(clippy::too_many_arguments)]
    pub fn record_log_with_usage(
        &mut self,
        path: &str,
        position: &LogPosition,
        alerts: &[(Alert, String)],
        window_ms: u64,
        now_ms: u64,
        counts: &Counts,
        now_s: i64,
    ) -> Result<Vec<Raised>, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut raised = Vec::new();
        for (alert, at) in alerts {
            raised.push(raise_in(&tx, alert, at, window_ms, now_ms)?);
        }
        add_counts_in(&tx, counts, now_s)?;
        tx.execute(
            "INSERT INTO log_positions (path, inode, offset, first_line) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (path) DO UPDATE SET inode = ?2, offset = ?3, first_line = ?4",
            params![path, position.inode as i64, position.offset as i64, position.first_line],
        )?;
        tx.commit()?;
        Ok(raised)
    }

    /// The counted rows from day `from_day` on (days since 1970-01-01, UTC).
    pub fn usage_rows(&self, from_day: i64) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT host, day, client, requests, blocked, last_seen, last_allowed FROM opening_usage WHERE day >= ?1 ORDER BY host, day, client",
        )?;
        let rows = stmt
            .query_map([from_day], |r| {
                Ok(Row {
                    host: r.get(0)?,
                    day: r.get(1)?,
                    client: r.get(2)?,
                    tally: Tally {
                        requests: r.get::<_, i64>(3)?.max(0) as u64,
                        blocked: r.get::<_, i64>(4)?.max(0) as u64,
                        last_seen: r.get(5)?,
                        last_allowed: r.get(6)?,
                    },
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// When counting began (Unix seconds), `None` before the first log read.
    pub fn counting_since(&self) -> Result<Option<i64>, StoreError> {
        let value: Option<String> =
            self.conn.query_row("SELECT value FROM usage_meta WHERE key = 'counting_since'", [], |r| r.get(0)).optional()?;
        Ok(value.and_then(|v| v.parse().ok()))
    }

    /// The AMCs whose direct openings the RPN migration closes: recorded by
    /// `plan --rpn-migration`, unless the plan that closed them was rejected. A number that no
    /// longer parses is an error naming its row: skipping it would reopen what was closed.
    pub fn rpn_migrated(&self) -> Result<BTreeSet<AmcNumber>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT m.rowid, m.amc FROM rpn_migrations m LEFT JOIN plans p ON p.id = m.plan_id
             WHERE p.status IS NULL OR p.status != 'rejected'",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?.collect::<Result<Vec<_>, _>>()?;
        rows.iter()
            .map(|(rowid, amc)| {
                AmcNumber::parse(amc).map_err(|source| {
                    StoreError::corrupt(format!("AMC number {amc:?} of row {rowid} (table rpn_migrations)"), source)
                })
            })
            .collect()
    }

    /// Records that `amcs` are migrated to the RPN, audited `rpn.migration` with `detail`.
    pub fn record_rpn_migration(&mut self, amcs: &[AmcNumber], by: &str, detail: &str, now: &str) -> Result<(), StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for amc in amcs {
            tx.execute("INSERT INTO rpn_migrations (amc, plan_id, at, by) VALUES (?1, NULL, ?2, ?3)", params![amc.as_str(), now, by])?;
        }
        audit_in(&tx, now, by, "rpn.migration", None, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// Ties the migrations recorded without a plan to plan `plan_id`, the one that closes them:
    /// rejecting it cancels them.
    pub fn link_rpn_migration(&mut self, plan_id: i64) -> Result<(), StoreError> {
        self.conn.execute("UPDATE rpn_migrations SET plan_id = ?1 WHERE plan_id IS NULL", [plan_id])?;
        Ok(())
    }

    /// Moves the migrations tied to plan `from` (superseded) to plan `to`, which carries their
    /// closings now.
    pub fn relink_rpn_migration(&mut self, from: i64, to: i64) -> Result<(), StoreError> {
        self.conn.execute("UPDATE rpn_migrations SET plan_id = ?2 WHERE plan_id = ?1", [from, to])?;
        Ok(())
    }

    /// Takes back the migrations recorded without a plan (the planning that was to close them
    /// failed, or closed nothing), audited `rpn.migration_cancelled` with why: a migration is
    /// only ever in force through a plan that the RSSI can reject.
    pub fn forget_unlinked_rpn_migration(&mut self, by: &str, why: &str, now: &str) -> Result<usize, StoreError> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute("DELETE FROM rpn_migrations WHERE plan_id IS NULL", [])?;
        if n > 0 {
            audit_in(&tx, now, by, "rpn.migration_cancelled", None, why)?;
        }
        tx.commit()?;
        Ok(n)
    }
}

/// Adds `counts` to the history, notes when counting began, prunes the oldest days.
fn add_counts_in(tx: &rusqlite::Transaction<'_>, counts: &Counts, now_s: i64) -> Result<(), StoreError> {
    tx.execute("INSERT OR IGNORE INTO usage_meta (key, value) VALUES ('counting_since', ?1)", [now_s.to_string()])?;
    if counts.is_empty() {
        return Ok(());
    }
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO opening_usage (host, day, client, requests, blocked, last_seen, last_allowed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (host, day, client) DO UPDATE SET
                requests = requests + excluded.requests,
                blocked = blocked + excluded.blocked,
                last_seen = max(last_seen, excluded.last_seen),
                last_allowed = coalesce(max(last_allowed, excluded.last_allowed), last_allowed, excluded.last_allowed)",
        )?;
        for (k, t) in &counts.rows {
            stmt.execute(params![k.host, k.day, k.client, t.requests as i64, t.blocked as i64, t.last_seen, t.last_allowed])?;
        }
    }
    tx.execute("DELETE FROM opening_usage WHERE day < ?1", [day_of(now_s) - HISTORY_DAYS])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;
    use crate::usage::{Openings, Source, count};

    fn lines(text: &[&str]) -> Vec<String> {
        text.iter().map(|l| l.to_string()).collect()
    }

    /// Counts land with the log's position; a batch recorded twice (the same lines read again
    /// after a crash would come with the old position, so this is the worst case) adds up,
    /// and days older than the history are pruned.
    #[test]
    fn counts_are_recorded_with_the_position_and_pruned_after_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("state")).unwrap();
        assert_eq!(store.counting_since().unwrap(), None);
        let hosts = [Host::parse("idb.a.test").unwrap()];
        let openings = Openings::new(&hosts);
        let batch = count(
            &lines(&[
                "1763630100.1 1 198.18.1.20 TCP_TUNNEL/200 1 CONNECT idb.a.test:443 - HIER_DIRECT/- -",
                "1763630200.1 1 198.18.1.20 TCP_DENIED/403 1 CONNECT idb.a.test:443 - HIER_NONE/- -",
            ]),
            Source::Squid,
            &openings,
            &Default::default(),
            1_763_630_300,
        );
        let position = LogPosition { inode: 1, offset: 100, first_line: "x".into() };
        let now_s = 1763630300;
        store.record_log_with_usage("/var/log/squid/access.log", &position, &[], 0, 0, &batch, now_s).unwrap();
        assert_eq!(store.log_position("/var/log/squid/access.log").unwrap(), Some(position.clone()));
        assert_eq!(store.counting_since().unwrap(), Some(now_s));
        store.record_log_with_usage("/var/log/squid/access.log", &position, &[], 0, 0, &batch, now_s + 10).unwrap();
        assert_eq!(store.counting_since().unwrap(), Some(now_s), "counting began once");
        let rows = store.usage_rows(0).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].tally.requests, rows[0].tally.blocked, rows[0].tally.last_seen), (2, 2, 1763630200));
        assert_eq!(rows[0].tally.last_allowed, Some(1763630100));
        let later = now_s + (HISTORY_DAYS + 2) * 86_400;
        let fresh = count(
            &[format!("{}.1 1 198.18.1.21 TCP_TUNNEL/200 1 CONNECT idb.a.test:443 - HIER_DIRECT/- -", later - 10)],
            Source::Squid,
            &openings,
            &Default::default(),
            later,
        );
        store.record_log_with_usage("/var/log/squid/access.log", &position, &[], 0, 0, &fresh, later).unwrap();
        let rows = store.usage_rows(0).unwrap();
        assert_eq!(rows.len(), 1, "the day older than the history is pruned: {rows:?}");
        assert_eq!((rows[0].client.as_str(), rows[0].tally.last_seen), ("198.18.1.21", later - 10));
    }

    /// A migrated AMC whose number no longer parses was skipped without a word, and its direct
    /// openings would have been proposed again; it is an error naming its table and row.
    #[test]
    fn a_corrupt_migrated_amc_is_named_by_its_table_and_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let amcs = [AmcNumber::parse("123456789").unwrap(), AmcNumber::parse("987654321").unwrap()];
        store.record_rpn_migration(&amcs, "rssi", "test", "t1").unwrap();
        assert_eq!(store.rpn_migrated().unwrap(), BTreeSet::from(amcs.clone()));
        store.conn.execute("UPDATE rpn_migrations SET amc = 'x98765432' WHERE amc = '987654321'", []).unwrap();
        let rowid: i64 = store.conn.query_row("SELECT rowid FROM rpn_migrations WHERE amc = 'x98765432'", [], |r| r.get(0)).unwrap();
        let err = store.rpn_migrated().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("AMC number \"x98765432\" of row {rowid} (table rpn_migrations)")), "{text}");
    }

    /// A migration's plan superseded by a newer read: the migration follows its closings to
    /// the new plan, and rejecting that one cancels it (it stayed in force for good before).
    #[test]
    fn a_migration_follows_its_closings_to_the_plan_that_supersedes_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let plan = |store: &Store, status: &str| -> i64 {
            store
                .conn
                .execute(
                    "INSERT INTO plans (created, base, source, serial, status, needs_approval, reasons, diff) VALUES ('t', 0, 's', NULL, ?1, 1, '[]', '{}')",
                    [status],
                )
                .unwrap();
            store.conn.last_insert_rowid()
        };
        let amc = AmcNumber::parse("123456789").unwrap();
        store.record_rpn_migration(std::slice::from_ref(&amc), "rssi", "test", "t1").unwrap();
        let first = plan(&store, "superseded");
        store.link_rpn_migration(first).unwrap();
        let second = plan(&store, "pending");
        store.relink_rpn_migration(first, second).unwrap();
        assert_eq!(store.rpn_migrated().unwrap(), BTreeSet::from([amc.clone()]), "in force while its plan waits");
        store.conn.execute("UPDATE plans SET status = 'rejected' WHERE id = ?1", [second]).unwrap();
        assert!(store.rpn_migrated().unwrap().is_empty(), "rejecting the plan that carries it cancels it");
    }
}
