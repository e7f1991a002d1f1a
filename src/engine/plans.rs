//! The reconcile pass and the plans: what the source asks for against what is in force, the
//! plans stored for it, the decisions on them, and rollbacks.

use std::collections::BTreeSet;
use std::path::Path;

use tracing::{info, info_span, warn};

use crate::catalogue::Origin;
use crate::plan::{Context, HostDiff, Plan, Proposal, Status, propose};
use crate::resolve::BookChange;
use crate::store::{Applied, Decision, Settled, SourceRead};

use super::{Engine, EngineError, MailRun, Read, now};

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

impl Engine {
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
                        // An RPN migration follows its closings to the plan that now carries
                        // them: rejecting that one cancels it, as rejecting the first would have.
                        let carrier = replanned.plans.iter().find(|p| by.contains(&p.id) && p.reasons.iter().any(|r| r.starts_with("RPN migration")));
                        if let Some(carrier) = carrier {
                            self.store.relink_rpn_migration(*id, carrier.id)?;
                        }
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
                self.store.settle_notified_host(&change.host, Settled::Rejected)?;
            }
        }
        if decision == Decision::Approve && apply {
            self.apply(id, &by)?;
            return Ok(self.store.plan(id)?);
        }
        Ok(plan)
    }
}

/// Why the plans computed against a recovered state hold their closings, until a person has
/// approved one ([`crate::store::Store::rests_on_recovery`]).
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
