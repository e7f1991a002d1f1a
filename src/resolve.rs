//! DNS resolution that follows TTLs, for the sinks that allow addresses (nftables).
//!
//! [`AddressBook`] is pure bookkeeping: answers are additive (a new answer adds its addresses),
//! an address that no longer appears stays for `grace` (cloud and CDN front ends give partial,
//! rotating answers, and connections in flight must not break), a failed resolution keeps the
//! last addresses, and each host is refreshed when its TTL, clamped to [`min_ttl`, `max_ttl`],
//! runs out. It also maps each address back to its hosts, for the log watcher. [`DnsResolver`]
//! asks the DNS (hickory) with bounded concurrency. Wildcards cannot be resolved and are left
//! out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use futures_util::StreamExt;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::host::Host;

/// Each host's addresses.
pub type Addresses = BTreeMap<Host, BTreeSet<IpAddr>>;

/// What the resolver knows of the hosts in force, for the sinks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Each host's addresses, those in their grace included.
    pub addresses: Addresses,
    /// The addresses that answers no longer give, with the end of their grace.
    pub leaving: BTreeMap<IpAddr, Millis>,
}

/// How answers are kept (`[resolver]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub grace: Duration,
    /// Internal ranges a hospital allows knowingly (`resolver.allow_networks`): an address in
    /// one of them is taken even though [`forbidden`] would refuse it.
    pub allow_networks: Vec<ipnet::IpNet>,
}

/// Why an address that a DNS answer gives for an AMC host is never allowed, if it is not:
/// this host, the hospital's own networks, or addresses that are not a server's. Whoever
/// controls an AMC's DNS could otherwise open the inside of the hospital on 443. IPv6 forms
/// that embed an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if let Some(v4) = v6.to_ipv4_mapped() {
                forbidden_v4(v4)
            } else if seg[..6] == [0; 6] {
                forbidden_v4(v6.to_ipv4().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED))
            } else if seg[0] == 0x2001 && seg[1] == 0 {
                Some("Teredo (2001::/32)")
            } else if seg[..3] == [0x64, 0xff9b, 1] {
                Some("local-use NAT64 (64:ff9b:1::/48)")
            } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || seg[0] == 0x2002 {
                let v4 = if seg[0] == 0x2002 { [seg[1], seg[2]] } else { [seg[6], seg[7]] };
                let embedded = std::net::Ipv4Addr::new((v4[0] >> 8) as u8, v4[0] as u8, (v4[1] >> 8) as u8, v4[1] as u8);
                forbidden_v4(embedded)
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                Some("unique-local (fc00::/7)")
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                Some("link-local (fe80::/10)")
            } else if (seg[0] & 0xffc0) == 0xfec0 {
                Some("site-local (fec0::/10)")
            } else if (seg[0] & 0xff00) == 0xff00 {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: std::net::Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_broadcast() {
        Some("broadcast")
    } else if o[0] == 0 {
        Some("unspecified (0.0.0.0/8)")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private (RFC 1918)")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared address space (100.64.0.0/10)")
    } else if ip.is_link_local() {
        Some("link-local (169.254.0.0/16)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if o[..3] == [192, 0, 0] {
        Some("IETF protocol assignments (192.0.0.0/24)")
    } else if o[0] >= 240 {
        Some("reserved (240.0.0.0/4)")
    } else {
        None
    }
}

impl Policy {
    /// Why `ip` is refused under this policy, if it is.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        let reason = forbidden(ip)?;
        (!self.allow_networks.iter().any(|net| net.contains(&ip))).then_some(reason)
    }
}

use crate::clock::{Millis, now_millis};

fn ms(d: Duration) -> Millis {
    d.as_millis() as Millis
}

/// One address of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    /// Since when good answers no longer give it; `None` while they do.
    absent_since: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HostState {
    addrs: BTreeMap<IpAddr, Seen>,
    next_refresh: Millis,
    last_error: Option<String>,
    /// Addresses the last good answer gave that are never allowed (see [`forbidden`]).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    refused: BTreeSet<IpAddr>,
}

/// The addresses of every resolvable host in force. Serialisable: the store keeps it between
/// passes, so that the grace of a vanished address outlives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressBook {
    hosts: BTreeMap<Host, HostState>,
}

/// What changed in a book.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookChange {
    pub added: Vec<(Host, IpAddr)>,
    pub removed: Vec<(Host, IpAddr)>,
    /// Addresses an answer gave that are refused, each reported once (until an answer no longer
    /// gives it), with why.
    pub refused: Vec<(Host, IpAddr, &'static str)>,
}

impl AddressBook {
    /// Follows the hosts of a state: new exact hosts are due at once, hosts gone are dropped.
    pub fn track<'a>(&mut self, hosts: impl IntoIterator<Item = &'a Host>, now: Millis) {
        let wanted: BTreeSet<&Host> = hosts.into_iter().filter(|h| !h.is_wildcard()).collect();
        self.hosts.retain(|h, _| wanted.contains(h));
        for h in wanted {
            self.hosts.entry(h.clone()).or_insert_with(|| HostState { addrs: BTreeMap::new(), next_refresh: now, last_error: None, refused: BTreeSet::new() });
        }
    }

    /// Hosts whose answer has run out.
    pub fn due(&self, now: Millis) -> Vec<Host> {
        self.hosts.iter().filter(|(_, s)| s.next_refresh <= now).map(|(h, _)| h.clone()).collect()
    }

    /// When the next host runs out.
    pub fn next_due(&self) -> Option<Millis> {
        self.hosts.values().map(|s| s.next_refresh).min()
    }

    /// Takes one resolution of `host`: its addresses with their TTLs, or why it failed.
    pub fn record(&mut self, host: &Host, result: Result<Vec<(IpAddr, u32)>, String>, now: Millis, policy: &Policy) -> BookChange {
        let mut change = BookChange::default();
        let Some(state) = self.hosts.get_mut(host) else { return change };
        match result {
            Ok(answer) => {
                let ttl = answer.iter().map(|(_, ttl)| Duration::from_secs(u64::from(*ttl))).min().unwrap_or(policy.min_ttl);
                // Not `clamp`, which panics when min > max (the configuration refuses that too).
                state.next_refresh = now.saturating_add(ms(ttl.max(policy.min_ttl).min(policy.max_ttl)));
                state.last_error = None;
                let (refused, fresh): (BTreeSet<IpAddr>, BTreeSet<IpAddr>) =
                    answer.iter().map(|(ip, _)| *ip).partition(|ip| policy.refuses(*ip).is_some());
                for ip in &refused {
                    if !state.refused.contains(ip) {
                        change.refused.push((host.clone(), *ip, policy.refuses(*ip).unwrap_or_default()));
                    }
                }
                state.refused = refused;
                // An address kept from before that the policy now refuses (allow_networks
                // narrowed) goes at once, without a grace.
                state.addrs.retain(|ip, _| {
                    let keep = policy.refuses(*ip).is_none();
                    if !keep {
                        change.removed.push((host.clone(), *ip));
                    }
                    keep
                });
                for (ip, seen) in state.addrs.iter_mut() {
                    if fresh.contains(ip) {
                        seen.absent_since = None;
                    } else if seen.absent_since.is_none() {
                        seen.absent_since = Some(now);
                    }
                }
                for ip in fresh {
                    if !state.addrs.contains_key(&ip) {
                        state.addrs.insert(ip, Seen { absent_since: None });
                        change.added.push((host.clone(), ip));
                    }
                }
            }
            Err(reason) => {
                // Keep what we had; ask again soon.
                state.last_error = Some(reason);
                state.next_refresh = now.saturating_add(ms(policy.min_ttl));
            }
        }
        change
    }

    /// Drops the addresses that good answers have not given for longer than `grace`.
    pub fn expire(&mut self, now: Millis, grace: Duration) -> BookChange {
        let mut change = BookChange::default();
        for (host, state) in &mut self.hosts {
            state.addrs.retain(|ip, seen| {
                let keep = seen.absent_since.is_none_or(|since| now.saturating_sub(since) <= ms(grace));
                if !keep {
                    change.removed.push((host.clone(), *ip));
                }
                keep
            });
        }
        change
    }

    /// Every host's current addresses, for the sinks.
    pub fn addresses(&self) -> Addresses {
        self.hosts
            .iter()
            .filter(|(_, s)| !s.addrs.is_empty())
            .map(|(h, s)| (h.clone(), s.addrs.keys().copied().collect()))
            .collect()
    }

    /// The addresses that good answers no longer give for any host, with when their grace
    /// ends (the latest, when several hosts gave them).
    pub fn leaving(&self, grace: Duration) -> BTreeMap<IpAddr, Millis> {
        let mut present = BTreeSet::new();
        let mut ends: BTreeMap<IpAddr, Millis> = BTreeMap::new();
        for state in self.hosts.values() {
            for (ip, seen) in &state.addrs {
                match seen.absent_since {
                    None => {
                        present.insert(*ip);
                    }
                    Some(since) => {
                        let end = ends.entry(*ip).or_insert(0);
                        *end = (*end).max(since.saturating_add(ms(grace)));
                    }
                }
            }
        }
        ends.retain(|ip, _| !present.contains(ip));
        ends
    }

    /// What the sinks need: [`AddressBook::addresses`] and [`AddressBook::leaving`].
    pub fn resolved(&self, grace: Duration) -> Resolved {
        Resolved { addresses: self.addresses(), leaving: self.leaving(grace) }
    }

    /// The hosts an address was resolved for (the log watcher's question).
    pub fn hosts_of(&self, ip: IpAddr) -> Vec<&Host> {
        self.hosts.iter().filter(|(_, s)| s.addrs.contains_key(&ip)).map(|(h, _)| h).collect()
    }

    /// Every address with the hosts it was resolved for: [`AddressBook::hosts_of`] for all
    /// addresses at once.
    pub fn reverse(&self) -> BTreeMap<IpAddr, Vec<Host>> {
        let mut map: BTreeMap<IpAddr, Vec<Host>> = BTreeMap::new();
        for (host, state) in &self.hosts {
            for ip in state.addrs.keys() {
                map.entry(*ip).or_default().push(host.clone());
            }
        }
        map
    }

    /// Hosts whose last good answer gave refused addresses, with them.
    pub fn refused(&self) -> Vec<(&Host, Vec<IpAddr>)> {
        self.hosts
            .iter()
            .filter(|(_, s)| !s.refused.is_empty())
            .map(|(h, s)| (h, s.refused.iter().copied().collect()))
            .collect()
    }

    /// Hosts whose last resolution failed, with why.
    pub fn failures(&self) -> Vec<(&Host, &str)> {
        self.hosts.iter().filter_map(|(h, s)| s.last_error.as_deref().map(|e| (h, e))).collect()
    }
}

/// Asks the DNS.
pub struct DnsResolver {
    inner: TokioResolver,
    concurrency: usize,
}

/// Why the resolver cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("`{0}` is not an IP address or IP:port")]
    BadServer(String),
    #[error("cannot set up the DNS resolver")]
    Setup(#[source] hickory_resolver::net::NetError),
}

impl DnsResolver {
    /// `servers` as `ip` or `ip:port`; empty means the system's (`/etc/resolv.conf`).
    pub fn new(servers: &[String], timeout: Duration, concurrency: usize) -> Result<DnsResolver, ResolverError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(ResolverError::Setup)?
        } else {
            let mut config = ResolverConfig::from_parts(None, vec![], vec![]);
            for s in servers {
                let addr = s
                    .parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| ResolverError::BadServer(s.clone()))?;
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut ns.connections {
                    c.port = addr.port();
                }
                config.add_name_server(ns);
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 2;
        // rocsync keeps its own book by TTL; a second cache would only delay changes.
        opts.cache_size = 0;
        Ok(DnsResolver { inner: builder.build().map_err(ResolverError::Setup)?, concurrency: concurrency.max(1) })
    }

    /// A and AAAA of `host`, with TTLs. A name with no address is an empty answer, not an
    /// error; a timeout or a server failure is an error.
    pub async fn resolve(&self, host: &Host) -> Result<Vec<(IpAddr, u32)>, String> {
        let name = format!("{}.", host.as_str());
        let (v4, v6) = tokio::join!(self.inner.lookup(name.as_str(), RecordType::A), self.inner.lookup(name.as_str(), RecordType::AAAA));
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for result in [v4, v6] {
            match result {
                Ok(lookup) => out.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some((IpAddr::V4(a.0), r.ttl)),
                    RData::AAAA(a) => Some((IpAddr::V6(a.0), r.ttl)),
                    _ => None,
                })),
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        if out.is_empty() && !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Ok(out)
    }

    /// Resolves every due host of `book`, at most `concurrency` at a time, then expires what
    /// has been gone longer than the grace.
    pub async fn refresh(&self, book: &mut AddressBook, policy: &Policy) -> BookChange {
        let due = book.due(now_millis());
        let results: Vec<(Host, Result<Vec<(IpAddr, u32)>, String>)> = futures_util::stream::iter(due)
            .map(|h| async move {
                let r = self.resolve(&h).await;
                (h, r)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let now = now_millis();
        let mut change = BookChange::default();
        for (host, result) in results {
            if let Err(e) = &result {
                tracing::warn!(host = %host, "Resolution failed, keeping the last addresses: {e}");
            }
            let one = book.record(&host, result, now, policy);
            for (host, ip, why) in &one.refused {
                tracing::warn!(host = %host, address = %ip, "DNS answer refused: {why} address.");
            }
            change.added.extend(one.added);
            change.removed.extend(one.removed);
            change.refused.extend(one.refused);
        }
        change.removed.extend(book.expire(now, policy.grace).removed);
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        min_ttl: Duration::from_secs(30),
        max_ttl: Duration::from_secs(3600),
        grace: Duration::from_secs(600),
        allow_networks: Vec::new(),
    };

    fn h(s: &str) -> Host {
        Host::parse(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn answers_add_and_vanished_addresses_stay_for_the_grace() {
        let t0: Millis = 1_700_000_000_000;
        let mut book = AddressBook::default();
        book.track([&h("a.test"), &h("*.w.test")], t0);
        assert_eq!(book.due(t0), [h("a.test")], "wildcards are not resolved");
        let c = book.record(&h("a.test"), Ok(vec![(ip("198.18.0.1"), 60), (ip("2001:db8::1"), 120)]), t0, &POLICY);
        assert_eq!(c.added.len(), 2);
        assert_eq!(book.next_due(), Some(t0 + 60_000));
        // The front end rotates: .2 appears, .1 is gone from this answer.
        let t1 = t0 + 60_000;
        book.record(&h("a.test"), Ok(vec![(ip("198.18.0.2"), 60), (ip("2001:db8::1"), 60)]), t1, &POLICY);
        assert_eq!(book.addresses()[&h("a.test")].len(), 3, "additive");
        assert_eq!(book.leaving(POLICY.grace), BTreeMap::from([(ip("198.18.0.1"), t1 + 600_000)]), "its grace ends");
        // Another host that still gives the address keeps it permanent.
        book.track([&h("a.test"), &h("b.test")], t1);
        book.record(&h("b.test"), Ok(vec![(ip("198.18.0.1"), 60)]), t1, &POLICY);
        assert!(book.resolved(POLICY.grace).leaving.is_empty());
        book.track([&h("a.test")], t1);
        assert!(book.expire(t1 + 600_000, POLICY.grace).removed.is_empty(), "within the grace");
        let gone = book.expire(t1 + 601_000, POLICY.grace);
        assert_eq!(gone.removed, [(h("a.test"), ip("198.18.0.1"))]);
        // Back before the grace ran out: it stays.
        let t2 = t1 + 700_000;
        book.record(&h("a.test"), Ok(vec![(ip("198.18.0.2"), 60)]), t2, &POLICY);
        book.record(&h("a.test"), Ok(vec![(ip("198.18.0.2"), 60), (ip("2001:db8::1"), 60)]), t2 + 60_000, &POLICY);
        assert!(book.expire(t2 + 2_000_000, POLICY.grace).removed.is_empty());
    }

    #[test]
    fn failures_keep_the_last_addresses_and_retry_soon() {
        let t0: Millis = 1_700_000_000_000;
        let mut book = AddressBook::default();
        book.track([&h("a.test")], t0);
        book.record(&h("a.test"), Ok(vec![(ip("198.18.0.1"), 300)]), t0, &POLICY);
        let t1 = t0 + 300_000;
        book.record(&h("a.test"), Err("timeout".into()), t1, &POLICY);
        assert_eq!(book.failures(), [(&h("a.test"), "timeout")]);
        assert_eq!(book.next_due(), Some(t1 + 30_000));
        assert!(book.expire(t1 + 86_400_000, POLICY.grace).removed.is_empty(), "a dead DNS closes nothing");
        assert_eq!(book.hosts_of(ip("198.18.0.1")), [&h("a.test")]);
    }

    #[test]
    fn ttls_are_clamped_and_hosts_followed() {
        let t0: Millis = 1_700_000_000_000;
        let mut book = AddressBook::default();
        book.track([&h("a.test"), &h("b.test")], t0);
        book.record(&h("a.test"), Ok(vec![(ip("198.18.0.1"), 1)]), t0, &POLICY);
        book.record(&h("b.test"), Ok(vec![(ip("198.18.0.1"), 86_400)]), t0, &POLICY);
        assert_eq!(book.due(t0 + 30_000), [h("a.test")]);
        assert_eq!(book.due(t0 + 3600_000).len(), 2);
        assert_eq!(book.hosts_of(ip("198.18.0.1")).len(), 2, "one address, two hosts");
        assert_eq!(book.reverse()[&ip("198.18.0.1")], [h("a.test"), h("b.test")]);
        book.track([&h("b.test")], t0);
        assert_eq!(book.hosts_of(ip("198.18.0.1")), [&h("b.test")]);
    }

    #[test]
    fn internal_addresses_are_refused_in_every_form() {
        for bad in [
            "10.0.0.5", "192.168.1.1", "172.16.3.4", "127.0.0.1", "0.0.0.0", "169.254.169.254", "255.255.255.255",
            "224.0.0.1", "100.64.1.1", "240.0.0.1", "::1", "::", "fe80::1", "fc00::1", "fd12::1", "ff02::1",
            "::ffff:10.0.0.5", "::ffff:127.0.0.1", "::10.0.0.5", "64:ff9b::a00:5", "2002:a00:5::1", "fec0::1",
            "64:ff9b:1::a00:1", "2001:0:4136:e378::1", "192.0.0.8",
        ] {
            assert!(forbidden(ip(bad)).is_some(), "{bad} must be refused");
        }
        for good in ["198.18.2.11", "8.8.8.8", "2001:db8::1", "2a01:cb00::1", "::ffff:198.18.0.1", "100.128.0.1"] {
            assert_eq!(forbidden(ip(good)), None, "{good} must be allowed");
        }
    }

    #[test]
    fn refused_answers_never_reach_the_book_and_are_reported_once() {
        let mut book = AddressBook::default();
        let host = h("idb.a.test");
        book.track([&host], 0);
        let answer = || Ok(vec![(ip("198.18.2.11"), 60), (ip("10.0.0.5"), 60), (ip("::ffff:192.168.1.1"), 60)]);
        let change = book.record(&host, answer(), 0, &POLICY);
        assert_eq!(change.added, [(host.clone(), ip("198.18.2.11"))]);
        assert_eq!(change.refused.iter().map(|(_, a, _)| *a).collect::<Vec<_>>(), [ip("10.0.0.5"), ip("::ffff:192.168.1.1")]);
        assert_eq!(book.addresses()[&host], BTreeSet::from([ip("198.18.2.11")]));
        assert_eq!(book.refused(), [(&host, vec![ip("10.0.0.5"), ip("::ffff:192.168.1.1")])]);
        // The same answer again: nothing new to report.
        assert!(book.record(&host, answer(), 60_000, &POLICY).refused.is_empty());
        // A range allowed knowingly.
        let allowing = Policy { allow_networks: vec!["10.0.0.0/24".parse().unwrap()], ..POLICY };
        let change = book.record(&host, answer(), 120_000, &allowing);
        assert_eq!(change.added, [(host.clone(), ip("10.0.0.5"))]);
        // Narrowed again: the address goes at once, without a grace.
        let change = book.record(&host, answer(), 180_000, &POLICY);
        assert_eq!(change.removed, [(host.clone(), ip("10.0.0.5"))]);
        assert!(!book.addresses()[&host].contains(&ip("10.0.0.5")));
    }
}
