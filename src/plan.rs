//! The diff between what is in force and what is desired, and the plans made of it.
//!
//! Pure. [`HostDiff::between`] is `None` when nothing changed. [`propose`] turns a diff into
//! one or two plans according to the review mode, and puts the mass-removal guard in front of
//! every mode: a plan that closes too much waits for a person, whatever the configuration says.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::amc::AmcNumber;
use crate::catalogue::{Entry, Origin, State};
use crate::alerts::Language;
use crate::host::Host;

pub mod render;

/// One host whose entry changes: `before` is `None` for an opening, `after` is `None` for a
/// closing; both are set when ports or provenance change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub host: Host,
    pub before: Option<Entry>,
    pub after: Option<Entry>,
}

/// What kind of change a [`Change`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

impl Change {
    pub fn kind(&self) -> ChangeKind {
        match (&self.before, &self.after) {
            (None, _) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Removed,
            (Some(_), Some(_)) => ChangeKind::Changed,
        }
    }

    fn ports(entry: &Option<Entry>) -> BTreeSet<u16> {
        entry.as_ref().map(|e| e.ports.clone()).unwrap_or_default()
    }

    fn amcs(entry: &Option<Entry>) -> BTreeSet<AmcNumber> {
        entry.as_ref().map(|e| e.amcs.keys().cloned().collect()).unwrap_or_default()
    }

    pub fn ports_added(&self) -> BTreeSet<u16> {
        &Self::ports(&self.after) - &Self::ports(&self.before)
    }

    pub fn ports_removed(&self) -> BTreeSet<u16> {
        &Self::ports(&self.before) - &Self::ports(&self.after)
    }

    pub fn amcs_added(&self) -> BTreeSet<AmcNumber> {
        &Self::amcs(&self.after) - &Self::amcs(&self.before)
    }

    pub fn amcs_removed(&self) -> BTreeSet<AmcNumber> {
        &Self::amcs(&self.before) - &Self::amcs(&self.after)
    }

    /// Whether the change closes something that is open: the host, or one of its ports.
    pub fn closes(&self) -> bool {
        !self.ports_removed().is_empty()
    }

    /// An opening that closes nothing and that the annuaire lists or the configuration adds
    /// (`policy.extra_hosts`: the engineer's own decision): what `hybrid` applies at once.
    pub fn is_trusted_opening(&self) -> bool {
        !self.closes() && self.after.as_ref().is_some_and(|e| e.origins.contains(&Origin::Annuaire) || e.origins.contains(&Origin::Config))
    }

    /// A change the configuration makes (`policy.extra_hosts`), the annuaire not listing the host.
    pub fn is_configured(&self) -> bool {
        self.after.as_ref().is_some_and(|e| e.origins.contains(&Origin::Config) && !e.origins.contains(&Origin::Annuaire))
    }

    /// An opening that only an Inter-AMC notification names.
    pub fn is_notification_only(&self) -> bool {
        self.before.is_none() && self.after.as_ref().is_some_and(|e| e.origins == BTreeSet::from([Origin::Notification]))
    }

    /// The entry to describe the change with: the new one, or the old one for a closing.
    pub fn entry(&self) -> &Entry {
        self.after.as_ref().or(self.before.as_ref()).expect("a change has an entry")
    }
}

/// The changes from one state to another, sorted by host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDiff {
    pub changes: Vec<Change>,
}

impl HostDiff {
    /// `None` when the two states allow the same hosts on the same ports with the same
    /// provenance.
    ///
    /// ```
    /// use rocsync::catalogue::{HostPorts, Policy, State, desired, Catalogue};
    /// use rocsync::plan::{ChangeKind, HostDiff};
    ///
    /// let policy = |hosts: &[&str]| Policy {
    ///     extra_hosts: hosts.iter().map(|h| h.parse::<HostPorts>().unwrap()).collect(),
    ///     ..Policy::default()
    /// };
    /// let before = desired(&Catalogue::default(), &policy(&["a.test", "b.test:8443"]));
    /// let after = desired(&Catalogue::default(), &policy(&["a.test", "c.test"]));
    /// let diff = HostDiff::between(&before, &after).unwrap();
    /// assert_eq!(diff.of_kind(ChangeKind::Added).count(), 1);
    /// assert_eq!(diff.of_kind(ChangeKind::Removed).count(), 1);
    /// assert!(HostDiff::between(&after, &after).is_none());
    /// ```
    pub fn between(applied: &State, desired: &State) -> Option<HostDiff> {
        let mut changes = Vec::new();
        let hosts: BTreeSet<&Host> = applied.entries.keys().chain(desired.entries.keys()).collect();
        for host in hosts {
            let before = applied.entries.get(host);
            let after = desired.entries.get(host);
            let differs = match (before, after) {
                (Some(b), Some(a)) => !b.same_as(a),
                _ => true,
            };
            if differs {
                changes.push(Change { host: host.clone(), before: before.cloned(), after: after.cloned() });
            }
        }
        (!changes.is_empty()).then_some(HostDiff { changes })
    }

    pub fn of_kind(&self, kind: ChangeKind) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(move |c| c.kind() == kind)
    }

    /// The state after this diff. New entries are dated `now`; kept ones keep their date.
    pub fn apply_to(&self, state: &State, now: &str) -> State {
        let mut next = state.clone();
        for change in &self.changes {
            match &change.after {
                None => {
                    next.entries.remove(&change.host);
                }
                Some(after) => {
                    let since = state
                        .entries
                        .get(&change.host)
                        .and_then(|e| e.since.clone())
                        .unwrap_or_else(|| now.to_owned());
                    let mut entry = after.clone();
                    entry.since = Some(since);
                    next.entries.insert(change.host.clone(), entry);
                }
            }
        }
        next
    }

    /// Hosts this diff closes, entirely or on some port.
    pub fn closings(&self) -> usize {
        self.changes.iter().filter(|c| c.closes()).count()
    }

    /// The hosts this diff opens or changes because the configuration adds them.
    pub fn configured(&self) -> Vec<&Host> {
        self.changes.iter().filter(|c| c.is_configured()).map(|c| &c.host).collect()
    }
}

/// How plans are decided (`review.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every plan that passes the guards is applied.
    Auto,
    /// Every plan waits for approval.
    Review,
    /// Openings that the annuaire lists or the configuration adds are applied at once;
    /// everything else waits.
    Hybrid,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Review => "review",
            Mode::Hybrid => "hybrid",
        })
    }
}

/// The mass-removal guard (`review.max_removal_percent`, `review.max_removal_hosts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    pub max_removal_percent: u32,
    pub max_removal_hosts: usize,
}

impl Default for Guard {
    fn default() -> Self {
        Guard { max_removal_percent: 20, max_removal_hosts: 10 }
    }
}

impl Guard {
    /// Why `diff` closes too much of `in_force` hosts, if it does.
    pub fn check(&self, in_force: usize, diff: &HostDiff) -> Vec<String> {
        let closing = diff.closings();
        let mut reasons = Vec::new();
        if in_force > 0 && closing * 100 > self.max_removal_percent as usize * in_force {
            reasons.push(format!(
                "closes {closing} of the {in_force} hosts in force ({}%), more than review.max_removal_percent = {}%",
                closing * 100 / in_force,
                self.max_removal_percent
            ));
        }
        if closing > self.max_removal_hosts {
            reasons.push(format!(
                "closes {closing} hosts, more than review.max_removal_hosts = {}",
                self.max_removal_hosts
            ));
        }
        reasons
    }
}

/// What [`propose`] needs besides the two states.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub mode: Mode,
    pub guard: Guard,
    /// How many values of the source's answer were rejected. When some were, a closing may be
    /// the effect of a value rocsync could not read, so closings wait.
    pub rejected_values: usize,
    /// `(answer, in force)` when the answer's serial is lower than the highest serial applied,
    /// or missing (`None`) once a serial has been applied: an older answer (replayed, or from a
    /// stale cache) would undo decisions, so every plan made from it waits.
    pub stale_serial: Option<(Option<u64>, u64)>,
}

/// A plan before it is stored: a diff and whether, and why, it waits for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub diff: HostDiff,
    pub needs_approval: bool,
    pub reasons: Vec<String>,
}

/// The plans that take `applied` to `desired`: none when nothing changed, one in `auto` and
/// `review` modes, and in `hybrid` mode up to two, the annuaire's openings first (applied at
/// once) and the rest (waiting), to be applied in that order.
pub fn propose(applied: &State, desired: &State, ctx: &Context) -> Vec<Proposal> {
    let Some(diff) = HostDiff::between(applied, desired) else {
        return Vec::new();
    };
    let mut guard_reasons = ctx.guard.check(applied.len(), &diff);
    if ctx.rejected_values > 0 && diff.closings() > 0 {
        guard_reasons.push(format!(
            "the source's answer had {} rejected value(s): a closing may come from a value rocsync could not read",
            ctx.rejected_values
        ));
    }
    // Openings only a notification names are hints: they always wait, in a plan of their own,
    // so that they never hold back what the annuaire itself lists.
    let (notified, rest): (Vec<Change>, Vec<Change>) = diff.changes.into_iter().partition(Change::is_notification_only);
    let notified_plan = (!notified.is_empty()).then(|| Proposal {
        reasons: vec![format!(
            "{} host(s) named only by an Inter-AMC notification, not listed by the annuaire: check with the AMC before approving",
            notified.len()
        )],
        diff: HostDiff { changes: notified },
        needs_approval: true,
    });
    let diff = HostDiff { changes: rest };
    let mut plans = match ctx.mode {
        _ if diff.changes.is_empty() => Vec::new(),
        Mode::Auto => vec![Proposal { diff, needs_approval: !guard_reasons.is_empty(), reasons: guard_reasons }],
        Mode::Review => {
            let mut reasons = vec!["review mode: every plan waits for approval".to_owned()];
            reasons.extend(guard_reasons);
            vec![Proposal { diff, needs_approval: true, reasons }]
        }
        Mode::Hybrid => {
            let (openings, rest): (Vec<Change>, Vec<Change>) =
                diff.changes.into_iter().partition(Change::is_trusted_opening);
            let mut plans = Vec::new();
            if !openings.is_empty() {
                plans.push(Proposal { diff: HostDiff { changes: openings }, needs_approval: false, reasons: vec![] });
            }
            if !rest.is_empty() {
                let mut reasons = vec![
                    "hybrid mode: only openings that the annuaire lists or policy.extra_hosts adds apply without approval".to_owned(),
                ];
                reasons.extend(guard_reasons);
                plans.push(Proposal { diff: HostDiff { changes: rest }, needs_approval: true, reasons });
            }
            plans
        }
    };
    plans.extend(notified_plan);
    if let Some((answer, in_force)) = ctx.stale_serial {
        for plan in &mut plans {
            plan.needs_approval = true;
            plan.reasons.push(match answer {
                Some(answer) => format!(
                    "the answer's serial {answer} is older than serial {in_force}, already applied: an older answer (replayed, or a stale cache) never applies without approval"
                ),
                None => format!(
                    "the answer has no valid serial while serial {in_force} is applied: it cannot be told newer, so it never applies without approval"
                ),
            });
        }
    }
    plans
}

/// Every reason a plan can wait for, in English (as [`propose`], [`Guard::check`] and the engine
/// word it, stored, and shown by the command line) and in French (the e-mails' default
/// language). `{}` stands for a value, in the same order in both texts. A test makes every
/// reason those functions give find its line here.
const REASONS: &[(&str, &str)] = &[
    (
        "closes {} of the {} hosts in force ({}%), more than review.max_removal_percent = {}%",
        "ferme {} des {} hôtes en vigueur ({} %), plus que review.max_removal_percent = {} %",
    ),
    ("closes {} hosts, more than review.max_removal_hosts = {}", "ferme {} hôtes, plus que review.max_removal_hosts = {}"),
    (
        "the source's answer had {} rejected value(s): a closing may come from a value rocsync could not read",
        "la réponse de la source avait {} valeur(s) rejetée(s) : une fermeture peut venir d'une valeur que rocsync n'a pas pu lire",
    ),
    (
        "{} host(s) named only by an Inter-AMC notification, not listed by the annuaire: check with the AMC before approving",
        "{} hôte(s) annoncé(s) seulement par une notification Inter-AMC, absent(s) de l'annuaire : vérifier auprès de l'AMC avant d'approuver",
    ),
    ("review mode: every plan waits for approval", "mode revue : chaque plan attend une approbation"),
    (
        "hybrid mode: only openings that the annuaire lists or policy.extra_hosts adds apply without approval",
        "mode hybride : seules les ouvertures que l'annuaire liste ou que policy.extra_hosts ajoute s'appliquent sans approbation",
    ),
    (
        "the answer's serial {} is older than serial {}, already applied: an older answer (replayed, or a stale cache) never applies without approval",
        "le numéro de série {} de la réponse est plus ancien que le numéro {}, déjà appliqué : une réponse plus ancienne (rejouée, ou un cache périmé) ne s'applique jamais sans approbation",
    ),
    (
        "the answer has no valid serial while serial {} is applied: it cannot be told newer, so it never applies without approval",
        "la réponse n'a pas de numéro de série valide alors que le numéro {} est appliqué : rien ne dit qu'elle est plus récente, elle ne s'applique donc jamais sans approbation",
    ),
    (
        "computed against a state recovered from the outputs (rocsync recover): a closing may come from what the outputs could not tell (ports, provenance)",
        "calculé sur un état repris des fichiers de sortie (rocsync recover) : une fermeture peut venir de ce que ces fichiers ne disent pas (ports, provenance)",
    ),
    ("rollback to the state of plan {}, asked by {}", "retour à l'état du plan {}, demandé par {}"),
];

/// A reason a plan waits for, as stored (English), in `lang`. A reason that has no French form
/// (written by an older rocsync) stays as it is rather than go missing.
pub fn reason_in(reason: &str, lang: &Language) -> String {
    match lang {
        Language::En => reason.to_owned(),
        Language::Fr => french(reason).unwrap_or_else(|| reason.to_owned()),
    }
}

/// The French form of a reason, when [`REASONS`] has its line.
pub fn french(reason: &str) -> Option<String> {
    REASONS.iter().find_map(|(en, fr)| values_in(en, reason).map(|values| fill(fr, &values)))
}

/// The values that fill `template`'s `{}` to give `text`, if `text` is `template` filled in.
fn values_in<'a>(template: &str, text: &'a str) -> Option<Vec<&'a str>> {
    let mut parts = template.split("{}");
    let mut rest = text.strip_prefix(parts.next().unwrap_or(""))?;
    let parts: Vec<&str> = parts.collect();
    let mut values = Vec::new();
    for (i, part) in parts.iter().copied().enumerate() {
        // The last value runs to the template's tail, at the very end of the text.
        let end = if i + 1 == parts.len() { rest.strip_suffix(part)?.len() } else { rest.find(part)? };
        values.push(&rest[..end]);
        rest = &rest[end + part.len()..];
    }
    rest.is_empty().then_some(values)
}

/// `template` with its `{}` replaced by `values`, in order.
fn fill(template: &str, values: &[&str]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    for (i, part) in template.split("{}").enumerate() {
        if i > 0 {
            out.push_str(values.get(i - 1).copied().unwrap_or(""));
        }
        out.push_str(part);
    }
    out
}

/// The plans among `new` that replace `old`, superseded by them: those that change one of the
/// hosts it changes. None when a newer read no longer asks for what `old` did.
pub fn replacements(old: &HostDiff, new: &[&Plan]) -> Vec<i64> {
    let hosts: BTreeSet<&Host> = old.changes.iter().map(|c| &c.host).collect();
    new.iter().filter(|p| p.diff.changes.iter().any(|c| hosts.contains(&c.host))).map(|p| p.id).collect()
}

/// Where a stored plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waits for a person's approval.
    Pending,
    /// Needs no approval; not applied yet.
    Ready,
    /// Approved; not applied yet (or its apply failed and can be retried).
    Approved,
    Applied,
    Rejected,
    /// A newer plan, or a plan applied since, made it stale.
    Superseded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Ready => "ready",
            Status::Approved => "approved",
            Status::Applied => "applied",
            Status::Rejected => "rejected",
            Status::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [Status::Pending, Status::Ready, Status::Approved, Status::Applied, Status::Rejected, Status::Superseded]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    /// Whether the plan may still be applied.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Pending | Status::Ready | Status::Approved)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: i64,
    pub created: String,
    /// The plan whose application produced the state this plan was computed against (0 for the
    /// empty state). A plan applies only on top of that state.
    pub base: i64,
    /// Which source the desired state came from (`file:…`, `https://…`).
    pub source: String,
    pub serial: Option<u64>,
    pub status: Status,
    pub needs_approval: bool,
    pub reasons: Vec<String>,
    pub diff: HostDiff,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{AmcUse, Policy};
    use crate::testing::{ctx, fixture_state, state};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn names<'a>(it: impl Iterator<Item = &'a Change>) -> Vec<&'a str> {
        it.map(|c| c.host.as_str()).collect()
    }

    #[test]
    fn v1_to_v2() {
        let diff = HostDiff::between(&state("urls-v1.json"), &state("urls-v2.json")).unwrap();
        assert_eq!(
            names(diff.of_kind(ChangeKind::Added)),
            ["clc.nouvelle-mutuelle-sud.test", "idb.nouvelle-mutuelle-sud.test", "idb2.roc.mutuelle-exemple.test"]
        );
        assert_eq!(names(diff.of_kind(ChangeKind::Removed)), ["idb.roc.mutuelle-exemple.test"]);
        // The operator shared by two AMCs stays when one of them leaves.
        assert_eq!(names(diff.of_kind(ChangeKind::Changed)), ["clc.otp-ouest.test", "idb.otp-ouest.test"]);
        let shared = diff.of_kind(ChangeKind::Changed).next().unwrap();
        assert!(!shared.closes());
        assert_eq!(shared.amcs_removed(), BTreeSet::from([AmcNumber::parse("567891234").unwrap()]));
        assert_eq!(diff.closings(), 1);
    }

    #[test]
    fn same_state_is_no_diff() {
        assert_eq!(HostDiff::between(&state("urls-v1.json"), &state("urls-v1.xml")), None);
        assert!(propose(&state("urls-v1.json"), &state("urls-v1.json"), &ctx(Mode::Auto)).is_empty());
    }

    #[test]
    fn emptied_source_needs_approval_in_every_mode() {
        let v1 = state("urls-v1.json");
        let empty = state("empty-organismes.json");
        for mode in [Mode::Auto, Mode::Review, Mode::Hybrid] {
            let plans = propose(&v1, &empty, &ctx(mode));
            assert_eq!(plans.len(), 1, "{mode}");
            assert!(plans[0].needs_approval, "{mode}");
            assert!(plans[0].reasons.iter().any(|r| r.contains("closes 12 of the 12 hosts in force (100%)")), "{:?}", plans[0].reasons);
            assert!(plans[0].reasons.iter().any(|r| r.contains("max_removal_hosts = 10")));
        }
    }

    #[test]
    fn guard_thresholds_are_strict() {
        let guard = Guard { max_removal_percent: 50, max_removal_hosts: 1 };
        let v1 = state("urls-v1.json");
        let mut one_less = v1.clone();
        one_less.entries.pop_first();
        let diff = HostDiff::between(&v1, &one_less).unwrap();
        assert!(guard.check(v1.len(), &diff).is_empty());
        assert_eq!(guard.check(2, &diff).len(), 0, "1 of 2 is 50%, not more");
        assert_eq!(guard.check(1, &diff).len(), 1, "1 of 1 is 100%");
    }

    #[test]
    fn modes() {
        let (v1, v2) = (state("urls-v1.json"), state("urls-v2.json"));
        let auto = propose(&v1, &v2, &ctx(Mode::Auto));
        assert_eq!((auto.len(), auto[0].needs_approval), (1, false));
        let review = propose(&v1, &v2, &ctx(Mode::Review));
        assert_eq!((review.len(), review[0].needs_approval), (1, true));
        let hybrid = propose(&v1, &v2, &ctx(Mode::Hybrid));
        assert_eq!(hybrid.len(), 2);
        assert!(!hybrid[0].needs_approval && hybrid[1].needs_approval);
        assert_eq!(hybrid[0].diff.closings(), 0);
        assert_eq!(names(hybrid[1].diff.changes.iter()), ["idb.roc.mutuelle-exemple.test"]);
        // Applied in order, the two hybrid plans reach the desired state.
        let mid = hybrid[0].diff.apply_to(&v1, "t1");
        let end = hybrid[1].diff.apply_to(&mid, "t2");
        assert_eq!(HostDiff::between(&end, &v2), None);
    }

    #[test]
    fn notification_only_openings_wait_in_their_own_plan() {
        let (v1, mut v2) = (state("urls-v1.json"), state("urls-v2.json"));
        let mut notified = v2.entries.values().next().unwrap().clone();
        notified.origins = BTreeSet::from([Origin::Notification]);
        v2.entries.insert(Host::parse("hint.mail.test").unwrap(), notified);
        for mode in [Mode::Auto, Mode::Hybrid, Mode::Review] {
            let plans = propose(&v1, &v2, &ctx(mode));
            let last = plans.last().unwrap();
            assert_eq!(names(last.diff.changes.iter()), ["hint.mail.test"], "{mode}");
            assert!(last.needs_approval && last.reasons[0].contains("named only by an Inter-AMC notification"));
            assert!(plans[..plans.len() - 1].iter().all(|p| !names(p.diff.changes.iter()).contains(&"hint.mail.test")));
        }
        assert!(!propose(&v1, &v2, &ctx(Mode::Auto))[0].needs_approval, "the annuaire's changes are not held back");
    }

    /// Issue 11, item 9: in hybrid mode the engineer's own `policy.extra_hosts` waited for
    /// approval, so every first start ended with a pending plan and a mail to the RSSI.
    #[test]
    fn hybrid_applies_the_configurations_openings_like_the_annuaires() {
        let policy = Policy {
            extra_hosts: vec!["crl.igc-sante.test:80".parse().unwrap(), "ocsp.igc-sante.test".parse().unwrap()],
            ..Policy::default()
        };
        let with_extras = fixture_state("urls-v1.json", &policy);
        let first = propose(&State::default(), &with_extras, &ctx(Mode::Hybrid));
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(!first[0].needs_approval);
        let configured: Vec<&str> = first[0].diff.configured().iter().map(|h| h.as_str()).collect();
        assert_eq!(configured, ["crl.igc-sante.test", "ocsp.igc-sante.test"]);
        // Taking one out of the configuration closes it: that waits.
        let fewer = Policy { extra_hosts: policy.extra_hosts[..1].to_vec(), ..Policy::default() };
        let plans = propose(&with_extras, &fixture_state("urls-v1.json", &fewer), &ctx(Mode::Hybrid));
        assert_eq!(plans.len(), 1);
        assert!(plans[0].needs_approval);
        // Review mode still asks for everything.
        assert!(propose(&State::default(), &with_extras, &ctx(Mode::Review))[0].needs_approval);
    }

    /// Issue 11, item 8: the French review mail gave its reasons in English. Every reason the
    /// planning gives has its French form.
    #[test]
    fn every_reason_has_its_french_form() {
        let (v1, v2, empty) = (state("urls-v1.json"), state("urls-v2.json"), state("empty-organismes.json"));
        let mut notified = v2.clone();
        let mut hint = v2.entries.values().next().unwrap().clone();
        hint.origins = BTreeSet::from([Origin::Notification]);
        notified.entries.insert(Host::parse("hint.mail.test").unwrap(), hint);
        let mut reasons: Vec<String> = Vec::new();
        for mode in [Mode::Auto, Mode::Review, Mode::Hybrid] {
            for stale in [None, Some((Some(4182), 4183)), Some((None, 4183))] {
                let c = Context { rejected_values: 2, stale_serial: stale, ..ctx(mode) };
                for to in [&v2, &empty, &notified] {
                    reasons.extend(propose(&v1, to, &c).into_iter().flat_map(|p| p.reasons));
                }
            }
        }
        assert!(reasons.len() > 20, "{reasons:?}");
        reasons.push("rollback to the state of plan 3, asked by J. Martin (RSSI)".into());
        for r in &reasons {
            let fr = french(r).unwrap_or_else(|| panic!("no French form for {r:?}"));
            assert!(!fr.contains(" the ") && !fr.contains("approval") && !fr.contains("{}"), "{fr}");
        }
        assert_eq!(
            french("closes 12 of the 13 hosts in force (92%), more than review.max_removal_percent = 20%").as_deref(),
            Some("ferme 12 des 13 hôtes en vigueur (92 %), plus que review.max_removal_percent = 20 %")
        );
        assert_eq!(
            french("rollback to the state of plan 3, asked by J. Martin (RSSI)").as_deref(),
            Some("retour à l'état du plan 3, demandé par J. Martin (RSSI)")
        );
        assert_eq!(reason_in("a reason an older rocsync wrote", &Language::Fr), "a reason an older rocsync wrote");
        assert_eq!(reason_in("review mode: every plan waits for approval", &Language::En), "review mode: every plan waits for approval");
    }

    #[test]
    fn replacements_are_the_new_plans_that_change_the_same_hosts() {
        let (v1, v2) = (state("urls-v1.json"), state("urls-v2.json"));
        let diff = HostDiff::between(&v1, &v2).unwrap();
        let plan = |id: i64, changes: Vec<Change>| Plan {
            id,
            created: String::new(),
            base: 0,
            source: String::new(),
            serial: None,
            status: Status::Pending,
            needs_approval: true,
            reasons: vec![],
            diff: HostDiff { changes },
        };
        let same = plan(9, diff.changes[..2].to_vec());
        let other = plan(10, diff.changes[3..].to_vec());
        let old = HostDiff { changes: diff.changes[..1].to_vec() };
        assert_eq!(replacements(&old, &[&same, &other]), [9]);
        assert_eq!(replacements(&old, &[&other]), Vec::<i64>::new());
    }

    #[test]
    fn an_older_serial_never_applies_without_approval() {
        let (v1, v2) = (state("urls-v1.json"), state("urls-v2.json"));
        for mode in [Mode::Auto, Mode::Hybrid] {
            let plans = propose(&v1, &v2, &Context { stale_serial: Some((Some(4182), 4183)), ..ctx(mode) });
            assert!(!plans.is_empty());
            for p in &plans {
                assert!(p.needs_approval, "{mode}: {p:?}");
                assert!(p.reasons.iter().any(|r| r.contains("4182") && r.contains("4183")), "{:?}", p.reasons);
            }
        }
    }

    #[test]
    fn rejected_values_hold_closings() {
        let (v1, v2) = (state("urls-v1.json"), state("urls-v2.json"));
        let plans = propose(&v1, &v2, &Context { rejected_values: 2, ..ctx(Mode::Auto) });
        assert!(plans[0].needs_approval);
        assert!(plans[0].reasons[0].contains("2 rejected value(s)"));
    }

    #[test]
    fn apply_keeps_since() {
        let v1 = state("urls-v1.json");
        let first = HostDiff::between(&State::default(), &v1).unwrap().apply_to(&State::default(), "t1");
        let v2 = state("urls-v2.json");
        let second = HostDiff::between(&first, &v2).unwrap().apply_to(&first, "t2");
        let since = |s: &State, h: &str| s.entries[&Host::parse(h).unwrap()].since.clone().unwrap();
        assert_eq!(since(&second, "idb.otp-ouest.test"), "t1");
        assert_eq!(since(&second, "idb2.roc.mutuelle-exemple.test"), "t2");
    }

    fn arb_state() -> impl Strategy<Value = State> {
        let entry = (proptest::collection::btree_set(1u16..5, 1..3), proptest::collection::btree_set(0u8..3, 0..3))
            .prop_map(|(ports, amcs)| Entry {
                ports,
                amcs: amcs
                    .into_iter()
                    .map(|n| {
                        let number = AmcNumber::parse(&format!("10000000{n}")).unwrap();
                        (number, AmcUse { name: format!("AMC {n}"), services: BTreeSet::new() })
                    })
                    .collect(),
                origins: BTreeSet::from([Origin::Annuaire]),
                since: None,
            });
        proptest::collection::btree_map(0u8..20, entry, 0..12).prop_map(|m| State {
            entries: m.into_iter().map(|(k, e)| (Host::parse(&format!("h{k}.a.test")).unwrap(), e)).collect::<BTreeMap<_, _>>(),
        })
    }

    proptest! {
        #[test]
        fn applying_the_diff_reaches_the_desired_state(a in arb_state(), b in arb_state()) {
            match HostDiff::between(&a, &b) {
                None => prop_assert_eq!(&a, &b),
                Some(diff) => {
                    let reached = diff.apply_to(&a, "now");
                    prop_assert_eq!(HostDiff::between(&reached, &b), None);
                    prop_assert!(diff.changes.windows(2).all(|w| w[0].host < w[1].host));
                }
            }
        }

        #[test]
        fn hybrid_never_applies_a_closing_without_approval(a in arb_state(), b in arb_state()) {
            for p in propose(&a, &b, &ctx(Mode::Hybrid)) {
                prop_assert!(p.needs_approval || p.diff.closings() == 0);
            }
            for p in propose(&a, &b, &ctx(Mode::Auto)) {
                let removed = p.diff.closings();
                prop_assert!(p.needs_approval || (removed <= 10 && removed * 100 <= 20 * a.len()));
            }
        }
    }
}
