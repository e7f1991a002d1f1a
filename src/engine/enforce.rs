//! Putting a state in force through the sinks: applying plans, repairing outputs that drifted,
//! and recovering what is in force from the outputs when the store was lost.

use std::path::PathBuf;

use tracing::{info, info_span, warn};

use crate::catalogue::State;
use crate::host::Host;
use crate::plan::Plan;
use crate::sinks::nftables::{element_commands, wanted};
use crate::sinks::readback::{self, ReadBack};
use crate::resolve::Resolved;
use crate::sinks::Sink;
use crate::store::StoreError;

use super::{Engine, EngineError, now};

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

impl Engine {
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
    pub(super) fn enforce(
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
    pub(super) fn refuse_if_lost(&self) -> Result<(), EngineError> {
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
