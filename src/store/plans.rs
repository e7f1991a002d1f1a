//! Plans: stored as computed, each on top of the plan whose state it was computed against,
//! superseded when a newer read replaces them, and the approvals and rejections of people.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::Serialize;

use super::applied::{applied_in, audit_in};
use super::{Applied, Store, StoreError};
use crate::plan::{HostDiff, Plan, Proposal, Status};

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

/// What [`Store::replan`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replanned {
    /// The open plans of the read, in the order they apply: kept ones and new ones.
    pub plans: Vec<Plan>,
    /// The plans superseded, each with the new plans that replace it (none when the newer read
    /// no longer asks for what it did).
    pub superseded: Vec<(i64, Vec<i64>)>,
}

impl Store {
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
        let id = self.id;
        let what = |column: &str| format!("{column} of plan {id} (table plans)");
        let status = Status::parse(&self.status)
            .ok_or_else(|| StoreError::corrupt(what("status"), format!("unknown status {:?}", self.status)))?;
        let reasons: Vec<String> =
            serde_json::from_str(&self.reasons).map_err(|source| StoreError::corrupt(what("reasons"), source))?;
        let diff: HostDiff = serde_json::from_str(&self.diff).map_err(|source| StoreError::corrupt(what("diff"), source))?;
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

pub(super) fn supersede_open_in(tx: &Transaction<'_>, reason: &str, now: &str) -> Result<Vec<i64>, StoreError> {
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

pub(super) fn set_status(conn: &Connection, id: i64, status: Status) -> Result<(), StoreError> {
    conn.execute("UPDATE plans SET status = ?1 WHERE id = ?2", params![status.as_str(), id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::State;
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
}
