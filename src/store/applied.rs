//! What is in force: every applied state (the newest `store.keep_applied_states` whole, for
//! rollback), the recovery of a lost store from the outputs, and the append-only audit log.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::plans::{set_status, supersede_open_in};
use super::{RECOVERY_SOURCE, Store, StoreError};
use crate::catalogue::State;
use crate::plan::{HostDiff, Plan, Status};

/// What is in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The plan whose application produced it; 0 before the first apply.
    pub plan_id: i64,
    pub at: Option<String>,
    pub state: State,
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

impl Store {
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
                .map_err(|source| StoreError::corrupt(format!("state applied by plan {plan_id} (table applied)"), source)),
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

    /// Whether `action` was audited since `since` (RFC 3339, compared as text).
    pub fn audited_since(&self, action: &str, since: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM audit WHERE action = ?1 AND at >= ?2 LIMIT 1", [action, since], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

pub(super) fn applied_in(conn: &Connection) -> Result<Applied, StoreError> {
    let row: Option<(i64, String, Option<String>)> = conn
        .query_row("SELECT plan_id, applied_at, state FROM applied ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    match row {
        None => Ok(Applied::default()),
        Some((plan_id, at, state)) => {
            let state = serde_json::from_str(state.as_deref().unwrap_or("null"))
                .map_err(|source| StoreError::corrupt(format!("state applied by plan {plan_id} (table applied)"), source))?;
            Ok(Applied { plan_id, at: Some(at), state })
        }
    }
}

/// Appends a line to the audit log.
pub(super) fn audit_in(conn: &Connection, now: &str, actor: &str, action: &str, plan_id: Option<i64>, detail: &str) -> Result<(), StoreError> {
    // The one gate of the audit log: who acted may come from a command line or the environment,
    // and no line of the log may forge another (escaping what is already escaped changes nothing).
    let (actor, detail) = (crate::text::excerpt(actor, 200), crate::text::escape(detail));
    conn.execute(
        "INSERT INTO audit (at, actor, action, plan_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now, actor, action, plan_id, detail.as_ref()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Mode, propose};
    use crate::testing::{ctx, state};

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
}
