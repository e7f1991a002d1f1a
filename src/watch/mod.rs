//! Blocked requests in firewall and proxy logs, and which AMC they hurt.
//!
//! Each log format has its line parser ([`squid`], [`nftlog`]) that says whether a line is a
//! blocked request, something else, or not a line of that log at all. [`Correlator`] then
//! finds the AMC hosts a blocked request was for, through the catalogue (hosts the annuaire
//! lists, approved or not) and, for address-only logs, the resolver's reverse map; a request
//! to a host the annuaire lists for `IDB` is flagged as IDB, the call that fails first at the
//! admissions desk. Pure.

pub mod follow;
pub mod health;
pub mod journal;
pub mod nftlog;
pub mod squid;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::Serialize;

use crate::amc::AmcNumber;
use crate::catalogue::{Catalogue, State};
use crate::host::Host;

/// A blocked request as a log line tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// As the log writes it.
    pub time: String,
    pub client: Option<IpAddr>,
    /// The requested name (proxy logs); lower-case.
    pub host: Option<String>,
    /// The destination address (firewall logs).
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

/// What one log line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Blocked(Blocked),
    /// A line of this log that is not a blocked request (an allowed request, another prefix).
    Other,
}

/// A blocked request to an AMC service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub time: String,
    pub client: Option<IpAddr>,
    /// The AMC host, or `None` for an address that maps to no known host.
    pub host: Option<String>,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub amcs: Vec<String>,
    pub services: Vec<String>,
    pub idb: bool,
    /// The host is allowed by what is in force: the block means enforcement is broken.
    pub in_force: bool,
}

/// What one reading of a log found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub events: Vec<Event>,
    /// Blocked requests to hosts that are not AMC hosts.
    pub other_denied: usize,
    /// Lines that are not lines of this log.
    pub skipped_lines: usize,
}

/// Who lists what, to recognise AMC requests.
pub struct Correlator<'a> {
    catalogue: &'a Catalogue,
    in_force: &'a State,
    /// Address → hosts, from the resolver.
    addresses: BTreeMap<IpAddr, Vec<Host>>,
    /// The catalogue's exact hosts by name, and its wildcards by base: a line is looked up in
    /// a few hash probes (the name, then each parent domain) instead of a scan of every host.
    exact: HashMap<&'a str, &'a Host>,
    wildcards: HashMap<&'a str, &'a Host>,
}

impl<'a> Correlator<'a> {
    pub fn new(catalogue: &'a Catalogue, in_force: &'a State, addresses: BTreeMap<IpAddr, Vec<Host>>) -> Self {
        let (mut exact, mut wildcards) = (HashMap::new(), HashMap::new());
        for host in catalogue.hosts.keys() {
            if host.is_wildcard() {
                wildcards.insert(host.base(), host);
            } else {
                exact.insert(host.as_str(), host);
            }
        }
        Correlator { catalogue, in_force, addresses, exact, wildcards }
    }

    /// The catalogue entries that match a requested name (exact, or strictly under a
    /// wildcard), as [`Host::matches`] says, in the catalogue's order.
    fn listings(&self, name: &str) -> Vec<&'a Host> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let mut found: Vec<&'a Host> = self.exact.get(name).copied().into_iter().collect();
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            found.extend(self.wildcards.get(parent).copied());
            rest = parent;
        }
        found.sort();
        found
    }

    /// The event for a blocked request, or `None` when it was not for an AMC host.
    pub fn event(&self, b: &Blocked) -> Option<Event> {
        let (name, entries): (Option<String>, Vec<&Host>) = match (&b.host, b.ip) {
            (Some(name), _) => (Some(name.clone()), self.listings(name)),
            (None, Some(ip)) => {
                let hosts: Vec<&Host> = self.addresses.get(&ip).map(|v| v.iter().collect()).unwrap_or_default();
                let names = hosts.first().map(|h| h.as_str().to_owned());
                let entries = hosts.iter().flat_map(|h| self.listings(h.as_str())).collect();
                (names, entries)
            }
            (None, None) => return None,
        };
        if entries.is_empty() {
            // An address-only line that maps to no host cannot be told apart from any other
            // drop: it is reported with no host, only when it is to the HTTPS port.
            return (b.host.is_none() && name.is_none() && b.port == Some(443)).then(|| Event {
                time: b.time.clone(),
                client: b.client,
                host: None,
                ip: b.ip,
                port: b.port,
                amcs: vec![],
                services: vec![],
                idb: false,
                in_force: false,
            });
        }
        let mut amcs: BTreeSet<&AmcNumber> = BTreeSet::new();
        let mut services: BTreeSet<&str> = BTreeSet::new();
        for h in &entries {
            for (n, u) in &self.catalogue.hosts[*h] {
                amcs.insert(n);
                services.extend(u.services.iter().map(String::as_str));
            }
        }
        let in_force = entries.iter().any(|h| {
            self.in_force.entries.get(*h).is_some_and(|e| b.port.is_none_or(|p| e.ports.contains(&p)))
        });
        Some(Event {
            time: b.time.clone(),
            client: b.client,
            host: name,
            ip: b.ip,
            port: b.port,
            amcs: amcs.iter().map(|n| n.as_str().to_owned()).collect(),
            idb: services.contains("IDB"),
            services: services.into_iter().map(str::to_owned).collect(),
            in_force,
        })
    }

    /// Reads a whole log with `parse_line`.
    pub fn read(&self, text: &str, parse_line: impl Fn(&str) -> Option<Line>) -> Report {
        let mut report = Report::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match parse_line(line) {
                None => report.skipped_lines += 1,
                Some(Line::Other) => {}
                Some(Line::Blocked(b)) => match self.event(&b) {
                    Some(e) => report.events.push(e),
                    None => report.other_denied += 1,
                },
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::{Policy, desired};
    use crate::sources::annuaire;

    fn catalogue(name: &str) -> Catalogue {
        let path = format!("{}/tests/fixtures/annuaire/{name}", env!("CARGO_MANIFEST_DIR"));
        Catalogue::from_answer(&annuaire::parse(&std::fs::read(path).unwrap(), None).unwrap())
    }

    fn log(name: &str) -> String {
        std::fs::read_to_string(format!("{}/tests/fixtures/logs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn squid_log_against_v2() {
        let cat = catalogue("urls-v2.json");
        let in_force = desired(&catalogue("urls-v1.json"), &Policy::default());
        let report = Correlator::new(&cat, &in_force, BTreeMap::new()).read(&log("squid-access.log"), squid::parse_line);
        let hosts: Vec<(&str, bool)> = report.events.iter().map(|e| (e.host.as_deref().unwrap(), e.idb)).collect();
        assert_eq!(
            hosts,
            [
                ("idb.nouvelle-mutuelle-sud.test", true),
                ("clc.nouvelle-mutuelle-sud.test", false),
                ("x.api.mutuelle-exemple.test", false),
                ("idb.nouvelle-mutuelle-sud.test", true),
            ]
        );
        assert_eq!(report.events[0].amcs, ["891234567"]);
        assert!(!report.events[0].in_force, "listed by the annuaire, not approved yet");
        assert!(report.events[2].in_force, "allowed and still blocked: enforcement is broken");
        assert_eq!((report.other_denied, report.skipped_lines), (1, 1));
    }

    #[test]
    fn nft_log_maps_addresses_back_to_hosts() {
        let cat = catalogue("urls-v2.json");
        let in_force = State::default();
        let host = Host::parse("idb.nouvelle-mutuelle-sud.test").unwrap();
        let addresses = BTreeMap::from([("198.18.3.40".parse().unwrap(), vec![host])]);
        let report = Correlator::new(&cat, &in_force, addresses).read(&log("nft-drop.log"), |l| nftlog::parse_line(l, "rocsync-drop: "));
        assert_eq!(report.events.len(), 3);
        assert_eq!(report.events[0].host.as_deref(), Some("idb.nouvelle-mutuelle-sud.test"));
        assert!(report.events[0].idb);
        assert_eq!(report.events[1].host, None, "198.18.3.41 maps to no host");
        assert_eq!(report.events[2].ip, Some("2001:db8:3::40".parse().unwrap()));
        assert_eq!(report.skipped_lines, 0);
    }

    proptest::proptest! {
        /// The index finds exactly what a scan of the catalogue with `Host::matches` finds.
        #[test]
        fn the_index_agrees_with_a_scan(
            hosts in proptest::collection::vec("(\\*\\.)?([a-c]{1,2}\\.){0,3}[a-c]{1,2}\\.test", 1..20),
            name in "([a-c]{1,2}\\.){0,4}[a-c]{1,2}\\.test\\.?",
        ) {
            let mut cat = Catalogue::default();
            for h in hosts.iter().filter_map(|h| Host::parse(h).ok()) {
                cat.hosts.insert(h, BTreeMap::new());
            }
            let in_force = State::default();
            let c = Correlator::new(&cat, &in_force, BTreeMap::new());
            let scan: Vec<&Host> = cat.hosts.keys().filter(|h| h.matches(&name)).collect();
            proptest::prop_assert_eq!(c.listings(&name), scan);
        }
    }
}

