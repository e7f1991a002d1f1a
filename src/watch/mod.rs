//! Blocked requests in firewall and proxy logs, and which AMC they hurt.
//!
//! Each log format has its line parser ([`squid`], [`nftlog`]) that says whether a line is a
//! blocked request, something else, or not a line of that log at all. [`Correlator`] then
//! finds the AMC hosts a blocked request was for, through the catalogue (hosts the annuaire
//! lists, approved or not) and, for address-only logs, the resolver's reverse map; a request
//! to a host the annuaire lists for `IDB` is flagged as IDB, the call that fails first at the
//! admissions desk. Pure, but for [`Correlator::read_from`], which streams a whole log through
//! [`read`] in bounded memory.

pub mod follow;
pub mod health;
pub mod journal;
pub mod nftlog;
pub mod read;
pub mod squid;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::ops::ControlFlow;

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
    /// Lines not read at all: too long, or not UTF-8 ([`read::Reject`]).
    pub rejected_lines: usize,
    /// The first [`NAMED_REJECTS`] of them, by number.
    pub rejected: Vec<read::Rejected>,
}

/// So many rejected lines are named in a [`Report`]; the others are only counted, so that a
/// file of garbage does not fill the memory with their numbers.
pub const NAMED_REJECTS: usize = 100;

/// Why [`Correlator::read_from`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The log could not be read (the lines before were handed over).
    #[error("cannot read the log")]
    Read(#[source] io::Error),
    /// The caller could not take an event (its output is closed, say).
    #[error("cannot write what the log holds")]
    Write(#[source] io::Error),
}

/// Who lists what, to recognise AMC requests.
pub struct Correlator<'a> {
    catalogue: &'a Catalogue,
    in_force: &'a State,
    /// Address → hosts, from the resolver; hashed, as every line of a firewall log looks one up.
    addresses: HashMap<IpAddr, Vec<Host>>,
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
        Correlator { catalogue, in_force, addresses: addresses.into_iter().collect(), exact, wildcards }
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

    /// Reads a whole log from `reader` in bounded memory ([`read::for_each_line`]), parsed by
    /// `parser`, handing every event to `each` as it is found: the report that comes back has
    /// the counts and no events. An I/O error stops the reading.
    pub fn read_from(
        &self,
        reader: impl io::Read,
        parser: &read::LogParser,
        mut each: impl FnMut(Event) -> io::Result<()>,
    ) -> Result<Report, ReadError> {
        let mut report = Report::default();
        let mut failed = None;
        read::for_each_line(reader, |number, line| {
            let line = match line {
                Ok(line) => line,
                Err(reason) => {
                    report.rejected_lines += 1;
                    if report.rejected.len() < NAMED_REJECTS {
                        report.rejected.push(read::Rejected { line: number, reason });
                    }
                    return ControlFlow::Continue(());
                }
            };
            if line.trim().is_empty() {
                return ControlFlow::Continue(());
            }
            match parser.line(line) {
                None => report.skipped_lines += 1,
                Some(Line::Other) => {}
                Some(Line::Blocked(b)) => match self.event(&b) {
                    Some(e) => {
                        if let Err(e) = each(e) {
                            failed = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                    None => report.other_denied += 1,
                },
            }
            ControlFlow::Continue(())
        })
        .map_err(ReadError::Read)?;
        match failed {
            Some(e) => Err(ReadError::Write(e)),
            None => Ok(report),
        }
    }
}

/// The whitespace-separated words of `line`, exactly as [`str::split_whitespace`] cuts them,
/// but cut on bytes when the line is ASCII (the only case a log writer makes): the log parsers'
/// tokenizer, the hot loop of a log reading.
pub(crate) fn words(line: &str) -> Words<'_> {
    Words { line, at: 0, unicode: (!line.is_ascii()).then(|| line.split_whitespace()) }
}

pub(crate) struct Words<'l> {
    line: &'l str,
    at: usize,
    /// A line with non-ASCII characters, some of which may be Unicode spaces.
    unicode: Option<std::str::SplitWhitespace<'l>>,
}

impl<'l> Iterator for Words<'l> {
    type Item = &'l str;

    fn next(&mut self) -> Option<&'l str> {
        if let Some(words) = &mut self.unicode {
            return words.next();
        }
        // ASCII: the characters `char::is_whitespace` takes are these bytes.
        let space = |b: u8| b == b' ' || (b'\t'..=b'\r').contains(&b);
        let (line, bytes) = (self.line, self.line.as_bytes());
        let mut i = self.at;
        while i < bytes.len() && space(bytes[i]) {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && !space(bytes[i]) {
            i += 1;
        }
        self.at = i;
        (i > start).then(|| &line[start..i])
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

    /// [`Correlator::read_from`] with its events collected.
    fn streamed(c: &Correlator, bytes: &[u8], parser: &read::LogParser) -> Report {
        let mut events = Vec::new();
        let mut report = c
            .read_from(bytes, parser, |e| {
                events.push(e);
                Ok(())
            })
            .unwrap();
        report.events = events;
        report
    }

    #[test]
    fn the_streamed_prefiltered_reading_reports_what_the_whole_text_does() {
        let cat = catalogue("urls-v2.json");
        let in_force = desired(&catalogue("urls-v1.json"), &Policy::default());
        let host = Host::parse("idb.nouvelle-mutuelle-sud.test").unwrap();
        let c = Correlator::new(&cat, &in_force, BTreeMap::from([("198.18.3.40".parse().unwrap(), vec![host])]));
        let text = log("squid-access.log");
        let whole = c.read(&text, squid::parse_line);
        assert_eq!(whole.events.len(), 4);
        assert_eq!(whole.skipped_lines, 1, "the garbage line is told apart even when the prefilter passes over it");
        assert_eq!(streamed(&c, text.as_bytes(), &read::LogParser::squid(read::Scope::Denials)), whole);
        let text = log("nft-drop.log");
        let whole = c.read(&text, |l| nftlog::parse_line(l, "rocsync-drop: "));
        assert_eq!(whole.events.len(), 3);
        assert_eq!(streamed(&c, text.as_bytes(), &read::LogParser::nft("rocsync-drop: ", read::Scope::Denials)), whole);
    }

    #[test]
    fn a_failed_write_stops_the_reading_and_says_so() {
        let cat = catalogue("urls-v2.json");
        let in_force = State::default();
        let c = Correlator::new(&cat, &in_force, BTreeMap::new());
        let text = log("squid-access.log");
        let mut calls = 0;
        let result = c.read_from(text.as_bytes(), &read::LogParser::squid(read::Scope::Denials), |_| {
            calls += 1;
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        });
        assert!(matches!(result, Err(ReadError::Write(_))), "{result:?}");
        assert_eq!(calls, 1);
    }

    proptest::proptest! {
        /// Streamed and prefiltered, a log gives the report that the full parse of the whole
        /// text gives: real lines, mangled lines, blank lines, `\r\n`, a last line cut short.
        #[test]
        fn streaming_and_the_prefilter_change_no_count(
            picks in proptest::collection::vec((0..12usize, "\\PC{0,30}", proptest::bool::ANY), 0..40),
        ) {
            let squid_lines: Vec<String> = log("squid-access.log").lines().map(str::to_owned).collect();
            let nft_lines: Vec<String> = log("nft-drop.log").lines().map(str::to_owned).collect();
            let mut text = String::new();
            for (i, noise, crlf) in &picks {
                let line = match i {
                    0..=5 => squid_lines[*i % squid_lines.len()].clone(),
                    6..=8 => nft_lines[*i % nft_lines.len()].clone(),
                    9 => String::new(),
                    10 => format!("{} {noise}", squid_lines[1]),
                    _ => noise.clone(),
                };
                text.push_str(&line);
                text.push_str(if *crlf { "\r\n" } else { "\n" });
            }
            if picks.len() % 2 == 1 {
                text.pop();
            }
            let cat = catalogue("urls-v2.json");
            let in_force = State::default();
            let c = Correlator::new(&cat, &in_force, BTreeMap::new());
            proptest::prop_assert_eq!(
                streamed(&c, text.as_bytes(), &read::LogParser::squid(read::Scope::Denials)),
                c.read(&text, squid::parse_line)
            );
            proptest::prop_assert_eq!(
                streamed(&c, text.as_bytes(), &read::LogParser::nft("rocsync-drop: ", read::Scope::Denials)),
                c.read(&text, |l| nftlog::parse_line(l, "rocsync-drop: "))
            );
        }

        /// The log tokenizer cuts exactly as `split_whitespace`, ASCII or not.
        #[test]
        fn words_cut_as_split_whitespace(line in "[a \t\x0b\x0c\r\u{a0}\u{2003}\u{85}é=]{0,40}") {
            proptest::prop_assert_eq!(words(&line).collect::<Vec<_>>(), line.split_whitespace().collect::<Vec<_>>());
        }

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

