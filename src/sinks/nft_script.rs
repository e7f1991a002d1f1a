//! An `nft -f` script that defines rocsync's table and its address sets, for review and for
//! administrators who load rules themselves.
//!
//! Loading it replaces the contents of rocsync's two sets and nothing else: the table is added
//! if missing, never deleted, so the administrator's chains that use the sets (which nftables
//! wants in the same table) survive every load.
//!
//! Sets hold `address . port` pairs; a host name cannot go into a set, so the hosts behind them
//! are listed in comments, and the elements are the addresses the resolver found (none yet
//! when nothing was resolved). A wildcard cannot be enforced by address: the comment says to
//! allow it through the proxy export instead.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use crate::catalogue::State;
use crate::resolve::Addresses;
use crate::sinks::comment_text;
use crate::sinks::nftables::{Family, Rule};

/// The names rocsync owns in nftables (`[nftables]` `table`, `set_v4`, `set_v6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftNames {
    pub table: String,
    pub set_v4: String,
    pub set_v6: String,
}

impl Default for NftNames {
    fn default() -> Self {
        NftNames { table: "rocsync".into(), set_v4: "rocsync_v4".into(), set_v6: "rocsync_v6".into() }
    }
}

/// Addresses resolved for each host.

pub fn render(state: &State, plan_id: i64, names: &NftNames, addresses: &Addresses) -> String {
    let table = &names.table;
    let mut out = String::new();
    let w = &mut out;
    // Writing to a String cannot fail; `ok()` keeps the lines short.
    writeln!(w, "#!/usr/sbin/nft -f").ok();
    writeln!(w, "# rocsync: table inet {table}, from plan {plan_id}. Check with: nft -c -f FILE").ok();
    writeln!(w, "# Loading this file replaces the elements of rocsync's sets {} and {}, and nothing else:", names.set_v4, names.set_v6).ok();
    writeln!(w, "# your own chains in table inet {table} (those that use the sets) stay as they are.").ok();
    // The rule rocsync's managed chain uses: `rocsync report openings` counts the lines it logs.
    let logged_v4 = Rule::LogAllow(Family::V4).nft(names, "");
    let logged_v6 = Rule::LogAllow(Family::V6).nft(names, "");
    writeln!(w, "# For `rocsync report openings` to count the requests of each opening, accept the sets with").ok();
    writeln!(w, "# a log of each new connection in your chain (after `ct state established,related accept`):").ok();
    writeln!(w, "# {logged_v4}").ok();
    writeln!(w, "# {logged_v6}").ok();
    writeln!(w, "#").ok();
    writeln!(w, "# host, TCP ports, AMC (services):").ok();
    for (host, entry) in &state.entries {
        let ports: Vec<String> = entry.ports.iter().map(u16::to_string).collect();
        let mut who: Vec<String> = entry
            .amcs
            .iter()
            .map(|(n, u)| {
                let services: Vec<&str> = u.services.iter().map(String::as_str).collect();
                match services.is_empty() {
                    true => format!("{n} {}", comment_text(&u.name)),
                    false => format!("{n} {} ({})", comment_text(&u.name), services.join(", ")),
                }
            })
            .collect();
        if entry.amcs.is_empty() {
            who.push(entry.origins.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", "));
        }
        writeln!(w, "#   {host}  tcp/{}  {}", ports.join(","), who.join("; ")).ok();
        if host.is_wildcard() {
            writeln!(w, "#     (a wildcard cannot be enforced by address: allow it through the proxy export)").ok();
        } else if !addresses.contains_key(host) {
            writeln!(w, "#     (no address resolved yet)").ok();
        }
    }
    let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
    for (host, entry) in &state.entries {
        for addr in addresses.get(host).into_iter().flatten() {
            for port in &entry.ports {
                match addr {
                    IpAddr::V4(a) => v4.insert(format!("{a} . {port}")),
                    IpAddr::V6(a) => v6.insert(format!("{a} . {port}")),
                };
            }
        }
    }
    // The table and the sets are declared first (an `add`: the table and a set of this type
    // that exist are kept), so that the flushes find them on a fresh machine too; then the sets
    // are emptied and filled, in the same transaction. The table is never deleted: it holds
    // the administrator's chains. A set of another type fails the whole load, changing nothing.
    let sets = [(&names.set_v4, "ipv4_addr"), (&names.set_v6, "ipv6_addr")];
    writeln!(w, "\ntable inet {table} {{").ok();
    for (name, kind) in sets {
        writeln!(w, "\tset {name} {{\n\t\ttype {kind} . inet_service\n\t\tflags timeout\n\t}}").ok();
    }
    writeln!(w, "}}").ok();
    for (name, _) in sets {
        writeln!(w, "flush set inet {table} {name}").ok();
    }
    writeln!(w, "\ntable inet {table} {{").ok();
    for (name, kind, elements) in [(&names.set_v4, "ipv4_addr", v4), (&names.set_v6, "ipv6_addr", v6)] {
        writeln!(w, "\tset {name} {{\n\t\ttype {kind} . inet_service\n\t\tflags timeout").ok();
        if !elements.is_empty() {
            let list: Vec<String> = elements.into_iter().collect();
            writeln!(w, "\t\telements = {{ {} }}", list.join(",\n\t\t\t     ")).ok();
        }
        writeln!(w, "\t}}").ok();
    }
    writeln!(w, "}}").ok();
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::amc::AmcNumber;
    use crate::catalogue::{AmcUse, Entry, Origin};
    use crate::host::Host;

    #[test]
    fn lists_hosts_and_fills_sets_with_resolved_addresses() {
        let mut entry = Entry {
            ports: BTreeSet::from([443, 8443]),
            amcs: BTreeMap::from([(
                AmcNumber::parse("123456789").unwrap(),
                AmcUse { name: "EVIL\n}\ntable ip x {".into(), services: BTreeSet::from(["IDB".into()]) },
            )]),
            origins: BTreeSet::from([Origin::Annuaire]),
            since: None,
        };
        let host = Host::parse("idb.a.test").unwrap();
        let mut state = State::default();
        state.entries.insert(host.clone(), entry.clone());
        entry.ports = BTreeSet::from([443]);
        state.entries.insert(Host::parse("*.w.a.test").unwrap(), entry);
        let addresses = Addresses::from([(
            host,
            BTreeSet::from(["198.18.0.10".parse().unwrap(), "2001:db8::10".parse().unwrap()]),
        )]);
        let script = render(&state, 3, &NftNames::default(), &addresses);
        assert!(script.contains("elements = { 198.18.0.10 . 443,\n\t\t\t     198.18.0.10 . 8443 }"), "{script}");
        assert!(script.contains("elements = { 2001:db8::10 . 443,"), "{script}");
        assert!(script.contains("#   *.w.a.test  tcp/443  123456789 EVIL } table ip x { (IDB)"), "{script}");
        // The hostile name stayed inside its comment line.
        assert_eq!(script.lines().filter(|l| l.starts_with("table ")).count(), 2, "{script}");
    }

    /// Issue 15: the counting side reads `rocsync-accept: ` lines that no rule wrote. The
    /// script shows the administrator's chain the same logged accept rule as the managed chain's,
    /// on a comment line that the read-back does not take for a host.
    #[test]
    fn the_script_shows_the_logged_accept_rule_that_usage_counting_reads() {
        let script = render(&State::default(), 1, &NftNames::default(), &Addresses::new());
        assert!(script.contains("\n# ip daddr . tcp dport @rocsync_v4 log prefix \"rocsync-accept: \" accept\n"), "{script}");
        assert!(script.contains("\n# ip6 daddr . tcp dport @rocsync_v6 log prefix \"rocsync-accept: \" accept\n"), "{script}");
        let back = crate::sinks::readback::read_text(&crate::sinks::files::Export::NftScript(NftNames::default()), std::path::Path::new("x.nft"), &script);
        assert_eq!((back.hosts.len(), back.unreadable), (0, 0), "{back:?}");
    }

    /// The script's first statement was `delete table inet rocsync`: loading it wiped the
    /// administrator's chains, which README told to put in that table.
    #[test]
    fn loading_replaces_the_sets_elements_and_never_deletes_the_table() {
        let script = render(&State::default(), 1, &NftNames::default(), &Addresses::new());
        let statements: Vec<&str> = script.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
        assert!(statements.iter().all(|l| !l.contains("delete")), "{script}");
        let flushes: Vec<&str> = statements.iter().copied().filter(|l| l.starts_with("flush")).collect();
        assert_eq!(flushes, ["flush set inet rocsync rocsync_v4", "flush set inet rocsync rocsync_v6"]);
        // Both sets are declared before they are flushed, so that a fresh machine takes it.
        let first_flush = script.find("flush set").unwrap();
        assert!(script[..first_flush].contains("set rocsync_v4 {") && script[..first_flush].contains("set rocsync_v6 {"), "{script}");
    }
}
