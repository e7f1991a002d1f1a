//! The move to the national reverse proxy (RPN ROC): which AMCs' direct openings nothing uses
//! any more, and the desired state once they are migrated.
//!
//! The guide's way: the GAP is re-pointed to the RPN (`rpn.switched_on`), then an AMC's direct
//! openings may close once no request went to them directly for `rpn.quiet_period`, counted
//! from `switched_on` at the earliest (traffic before the switch says nothing). The closing is
//! a plan that always waits for a person's approval and names each host's last direct use. A
//! migrated AMC stays closed while `[rpn]` is enabled, whatever the annuaire lists; turning
//! `[rpn]` off opens it again through a normal plan. Only AMC hosts ever close: the annuaire,
//! the IGC-Santé CRL/OCSP hosts, `extra_hosts` and the RPN host come from the configuration and
//! stay.
//!
//! Pure: plain data in, plain data out; "now" is given ([`crate::usage::now`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::alerts::RpnNote;
use crate::amc::AmcNumber;
use crate::catalogue::{Catalogue, Origin, State};
use crate::config::rpn::Rpn;
use crate::plan::Proposal;
use crate::usage::{Row, time_text};
use crate::watch::{Blocked, Event};

/// The RPN in the AMC list of an alert's event: it stands for every AMC.
pub const RPN_LABEL: &str = "RPN";

/// A blocked request to the RPN host, as an event to alert on like an AMC's: an RPN outage is
/// an outage of every AMC. `None` for any other request, or when `[rpn]` is off. Only proxy
/// logs name the host; an nftables drop of the RPN's address maps to it through the resolver
/// only if the RPN host is resolved (it is in force like an extra host).
pub fn event(b: &Blocked, rpn: Option<&Rpn>, in_force: &State) -> Option<Event> {
    let rpn = rpn?;
    let host = b.host.as_deref()?;
    if !rpn.host.host.matches(host) {
        return None;
    }
    let allowed = in_force.entries.get(&rpn.host.host).is_some_and(|e| b.port.is_none_or(|p| e.ports.contains(&p)));
    Some(Event {
        time: b.time.clone(),
        client: b.client,
        host: Some(host.to_owned()),
        ip: b.ip,
        port: b.port,
        amcs: vec![RPN_LABEL.to_owned()],
        services: Vec::new(),
        idb: true,
        in_force: allowed,
    })
}

/// What the RPN has to do with a blocked request's event: the RPN itself, or a migrated AMC's
/// host (closed) that a client still reaches directly.
pub fn note(event: &Event, migrated: &BTreeSet<AmcNumber>) -> Option<RpnNote> {
    if event.amcs.len() == 1 && event.amcs[0] == RPN_LABEL {
        return Some(RpnNote::Outage);
    }
    let direct = !event.in_force && event.amcs.iter().any(|n| migrated.iter().any(|m| m.as_str() == n.as_str()));
    direct.then_some(RpnNote::GoesDirect)
}

/// One client still going direct to an AMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientUse {
    /// The client's address as the log wrote it (empty when the log has none).
    pub client: String,
    pub requests: u64,
    pub last_seen: String,
}

/// One AMC in `rocsync report rpn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmcDirect {
    pub amc: String,
    pub name: String,
    /// Its hosts in the annuaire.
    pub hosts: Vec<String>,
    /// Requests to those hosts since `switched_on`, let through or blocked.
    pub direct_requests: u64,
    /// The last of them.
    pub last_direct: Option<String>,
    /// Who made them, most requests first.
    pub clients: Vec<ClientUse>,
    /// From when no direct request was seen (`switched_on` at the earliest).
    pub quiet_since: String,
    /// `quiet_since` plus the quiet period.
    pub closable_on: String,
    /// Its direct openings may close now (and are not closed yet).
    pub closable: bool,
    /// `plan --rpn-migration` has closed (or is closing) its direct openings.
    pub migrated: bool,
}

/// `rocsync report rpn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RpnReport {
    pub rpn_host: String,
    pub switched_on: String,
    pub quiet_period_days: u64,
    /// Requests to the RPN host since `switched_on`.
    pub rpn_requests: u64,
    /// Since when rocsync counts the requests in the logs; `None` before it ever did. An AMC is
    /// quiet only for as long as rocsync has watched it.
    pub counting_since: Option<String>,
    pub amcs: Vec<AmcDirect>,
}

/// The RPN report from the annuaire's catalogue and the counted rows.
///
/// The quiet period runs from the switch or from when counting began, whichever is later: an AMC
/// nobody watched is not quiet, it is unknown, and without any counting nothing is closable.
pub fn report(catalogue: &Catalogue, rows: &[Row], rpn: &Rpn, now: i64, counting_since: Option<i64>, migrated: &BTreeSet<AmcNumber>) -> RpnReport {
    let switched_on = rpn.switched_on_secs();
    let watched_from = counting_since.map_or(i64::MAX, |c| c.max(switched_on));
    let quiet = i64::try_from(rpn.quiet_period.as_secs()).unwrap_or(i64::MAX);
    let recent: Vec<&Row> = rows.iter().filter(|r| r.tally.last_seen >= switched_on).collect();
    let mut hosts_of: BTreeMap<&AmcNumber, Vec<&str>> = BTreeMap::new();
    for (host, uses) in &catalogue.hosts {
        for number in uses.keys() {
            hosts_of.entry(number).or_default().push(host.as_str());
        }
    }
    let amcs = hosts_of
        .into_iter()
        .map(|(number, hosts)| {
            let direct: Vec<&Row> = recent.iter().copied().filter(|r| hosts.contains(&r.host.as_str())).collect();
            let direct_requests: u64 = direct.iter().map(|r| r.tally.requests + r.tally.blocked).sum();
            let last = direct.iter().map(|r| r.tally.last_seen).max();
            let quiet_since = last.map_or(watched_from, |l| l.max(watched_from));
            let closable_on = quiet_since.saturating_add(quiet);
            let is_migrated = migrated.contains(number);
            AmcDirect {
                amc: number.as_str().to_owned(),
                name: catalogue.amcs.get(number).map(|a| a.name.clone()).unwrap_or_default(),
                hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
                direct_requests,
                last_direct: last.map(time_text),
                clients: crate::usage::clients(&direct)
                    .into_iter()
                    .map(|(client, requests, last_seen)| ClientUse { client, requests, last_seen: time_text(last_seen) })
                    .collect(),
                quiet_since: time_text(quiet_since),
                closable_on: time_text(closable_on),
                closable: counting_since.is_some() && now >= closable_on && !is_migrated,
                migrated: is_migrated,
            }
        })
        .collect();
    let rpn_host = rpn.host.host.as_str();
    RpnReport {
        rpn_host: rpn_host.to_owned(),
        switched_on: rpn.switched_on.to_string(),
        quiet_period_days: rpn.quiet_period.as_secs() / 86_400,
        rpn_requests: recent.iter().filter(|r| r.host == rpn_host).map(|r| r.tally.requests + r.tally.blocked).sum(),
        counting_since: counting_since.map(time_text),
        amcs,
    }
}

/// The AMCs whose direct openings `plan --rpn-migration` closes now.
pub fn closable(report: &RpnReport) -> Vec<AmcNumber> {
    report.amcs.iter().filter(|a| a.closable).filter_map(|a| AmcNumber::parse(&a.amc).ok()).collect()
}

/// Takes the migrated AMCs out of the desired state: a host only they list closes; a host
/// another AMC still lists stays for that one; a host the configuration adds (`extra_hosts`,
/// the RPN host) stays for the configuration.
pub fn close_migrated(desired: &mut State, migrated: &BTreeSet<AmcNumber>) {
    if migrated.is_empty() {
        return;
    }
    desired.entries.retain(|_, entry| {
        if !entry.amcs.keys().any(|n| migrated.contains(n)) {
            return true;
        }
        entry.amcs.retain(|n, _| !migrated.contains(n));
        if entry.amcs.is_empty() {
            entry.origins.retain(|o| *o == Origin::Config);
            return !entry.origins.is_empty();
        }
        true
    });
}

/// The last request seen to each host, from the counted rows.
pub fn last_uses(rows: &[Row]) -> BTreeMap<String, i64> {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows {
        let t = last.entry(r.host.clone()).or_insert(r.tally.last_seen);
        *t = (*t).max(r.tally.last_seen);
    }
    last
}

/// A plan that closes a migrated AMC's direct openings waits for approval, whatever the mode,
/// and says so, naming each host's last direct use.
pub fn hold_for_approval(proposals: &mut [Proposal], migrated: &BTreeSet<AmcNumber>, last: &BTreeMap<String, i64>) {
    for p in proposals.iter_mut() {
        let reason = {
            let mut amcs: BTreeSet<&str> = BTreeSet::new();
            let mut hosts: Vec<String> = Vec::new();
            for change in &p.diff.changes {
                let removed: Vec<AmcNumber> = change.amcs_removed().into_iter().filter(|n| migrated.contains(n)).collect();
                if removed.is_empty() {
                    continue;
                }
                for n in &removed {
                    if let Some(m) = migrated.get(n) {
                        amcs.insert(m.as_str());
                    }
                }
                let used = last.get(change.host.as_str()).map_or_else(|| "never seen".to_owned(), |t| time_text(*t));
                hosts.push(format!("{} (last direct use: {used})", change.host.as_str()));
            }
            (!hosts.is_empty()).then(|| {
                format!(
                    "RPN migration: closes the direct openings of AMC {} (traffic goes through the national reverse proxy): {}",
                    amcs.into_iter().collect::<Vec<_>>().join(", "),
                    hosts.join(", ")
                )
            })
        };
        if let Some(reason) = reason {
            p.needs_approval = true;
            if !p.reasons.contains(&reason) {
                p.reasons.push(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::catalogue::{HostPorts, Policy, desired};
    use crate::plan::{Context, Guard, Mode, propose};
    use crate::usage::Tally;

    const DAY: i64 = 86_400;

    fn catalogue() -> Catalogue {
        let path = format!("{}/tests/fixtures/annuaire/urls-v1.json", env!("CARGO_MANIFEST_DIR"));
        Catalogue::from_answer(&crate::sources::annuaire::parse(&std::fs::read(path).unwrap(), None).unwrap())
    }

    fn rpn(switched_on: &str) -> Rpn {
        Rpn {
            host: "rpn.roc.test:443".parse::<HostPorts>().unwrap(),
            switched_on: time::Date::parse(switched_on, time::macros::format_description!("[year]-[month]-[day]")).unwrap(),
            quiet_period: Duration::from_secs(14 * 86_400),
        }
    }

    fn row(host: &str, at: i64, n: u64) -> Row {
        Row { host: host.into(), day: at.div_euclid(DAY), client: "198.18.1.20".into(), tally: Tally { requests: n, blocked: 0, last_seen: at, last_allowed: Some(at) } }
    }

    /// An AMC is closable only after a quiet period counted from the switch at the earliest;
    /// one still used directly is not, and says who uses it.
    #[test]
    fn only_amcs_quiet_since_the_switch_for_the_quiet_period_are_closable() {
        let cat = catalogue();
        let rpn = rpn("2026-03-02");
        let switch = rpn.switched_on_secs();
        let (busy_amc, busy_host) =
            cat.hosts.iter().find(|(_, u)| u.len() == 1).map(|(h, u)| (u.keys().next().unwrap().clone(), h.as_str().to_owned())).unwrap();
        let rows = [row(&busy_host, switch + 10 * DAY, 3), row(&busy_host, switch - 5 * DAY, 100), row("rpn.roc.test", switch + DAY, 50)];
        let before = report(&cat, &rows, &rpn, switch + 13 * DAY, Some(0), &BTreeSet::new());
        assert!(before.amcs.iter().all(|a| !a.closable), "13 days after the switch nothing is closable");
        let after = report(&cat, &rows, &rpn, switch + 15 * DAY, Some(0), &BTreeSet::new());
        let busy = after.amcs.iter().find(|a| a.amc == busy_amc.as_str()).unwrap();
        assert!(!busy.closable, "used directly 10 days after the switch");
        assert_eq!(busy.direct_requests, 3, "what came before the switch does not count");
        assert_eq!(busy.clients[0].client, "198.18.1.20");
        assert!(after.amcs.iter().filter(|a| a.amc != busy_amc.as_str()).all(|a| a.closable));
        assert_eq!(after.rpn_requests, 50);
        assert!(!closable(&after).contains(&busy_amc));
    }

    /// The migration closes only AMC hosts: the configuration's hosts (the annuaire, the
    /// IGC-Santé CRL, the RPN host) stay, and the plan waits for approval even in auto mode.
    #[test]
    fn migrated_amcs_close_and_the_plan_waits_whatever_the_mode() {
        let cat = catalogue();
        let mut policy = Policy::default();
        policy.extra_hosts.push("rpn.roc.test:443".parse().unwrap());
        policy.extra_hosts.push("crl.igc-sante.test:80".parse().unwrap());
        let applied = desired(&cat, &policy);
        let migrated: BTreeSet<AmcNumber> = cat.amcs.keys().cloned().collect();
        let mut wanted = applied.clone();
        close_migrated(&mut wanted, &migrated);
        assert_eq!(wanted.entries.keys().map(|h| h.as_str()).collect::<Vec<_>>(), ["crl.igc-sante.test", "rpn.roc.test"]);
        let ctx = Context { mode: Mode::Auto, guard: Guard { max_removal_percent: 100, max_removal_hosts: 1000 }, rejected_values: 0, stale_serial: None };
        let mut proposals = propose(&applied, &wanted, &ctx);
        assert!(!proposals.is_empty());
        let last = BTreeMap::from([(applied.entries.keys().next().unwrap().as_str().to_owned(), 1_700_000_000)]);
        hold_for_approval(&mut proposals, &migrated, &last);
        assert!(proposals.iter().all(|p| p.needs_approval));
        let reasons = proposals.iter().flat_map(|p| &p.reasons).find(|r| r.starts_with("RPN migration")).unwrap();
        assert!(reasons.contains("last direct use: 2023-11-14T22:13:20Z"), "{reasons}");
        assert!(reasons.contains("never seen"), "{reasons}");
    }

    /// A blocked request to the RPN host alerts like an AMC's, and one to a migrated AMC's
    /// closed host says the client still goes direct.
    #[test]
    fn blocked_requests_to_the_rpn_and_to_migrated_amcs_are_told_apart() {
        let rpn = rpn("2026-03-02");
        let blocked = |host: &str| Blocked { time: String::new(), client: Some("198.18.1.20".parse().unwrap()), host: Some(host.into()), ip: None, port: Some(443) };
        let in_force = State::default();
        let e = event(&blocked("rpn.roc.test"), Some(&rpn), &in_force).expect("the RPN host");
        assert_eq!(note(&e, &BTreeSet::new()), Some(RpnNote::Outage));
        assert_eq!(event(&blocked("rpn.roc.test"), None, &in_force), None, "[rpn] off");
        assert_eq!(event(&blocked("idb.a.test"), Some(&rpn), &in_force), None);
        let amc = AmcNumber::parse("123456789").unwrap();
        let direct = Event { amcs: vec!["123456789".into()], in_force: false, host: Some("idb.a.test".into()), ..e.clone() };
        assert_eq!(note(&direct, &BTreeSet::from([amc.clone()])), Some(RpnNote::GoesDirect));
        assert_eq!(note(&direct, &BTreeSet::new()), None, "not migrated: an ordinary block");
        assert_eq!(note(&Event { in_force: true, ..direct }, &BTreeSet::from([amc])), None);
    }

    /// An AMC rocsync never watched is not quiet: with no counting nothing is closable, and
    /// the quiet period runs from when counting began when that is after the switch.
    #[test]
    fn an_amc_is_quiet_only_for_as_long_as_rocsync_has_counted() {
        let cat = catalogue();
        let rpn = rpn("2026-03-02");
        let switch = rpn.switched_on_secs();
        let never = report(&cat, &[], &rpn, switch + 100 * DAY, None, &BTreeSet::new());
        assert!(never.amcs.iter().all(|a| !a.closable), "no counting, nothing closable");
        assert_eq!(never.counting_since, None);
        let late = report(&cat, &[], &rpn, switch + 20 * DAY, Some(switch + 10 * DAY), &BTreeSet::new());
        assert!(late.amcs.iter().all(|a| !a.closable), "counted for 10 days only, quiet period 14");
        let enough = report(&cat, &[], &rpn, switch + 25 * DAY, Some(switch + 10 * DAY), &BTreeSet::new());
        assert!(enough.amcs.iter().all(|a| a.closable), "counted and quiet for 15 days");
    }
}
