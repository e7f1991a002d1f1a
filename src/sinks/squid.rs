//! Squid `dstdomain` ACL file.
//!
//! A wildcard `*.a.test` becomes `.a.test`. Squid's `.a.test` also matches `a.test` itself, so
//! the export is that much broader than the annuaire's wildcard. Squid warns about, and ignores,
//! an entry that another one already covers (`x.a.test` under `.a.test`): such entries are left
//! out, so that `squid -k parse` stays quiet.

use std::collections::HashSet;
use std::fmt::Write;

use crate::catalogue::State;
use crate::host::Host;

pub fn render(state: &State, plan_id: i64) -> String {
    let bases: HashSet<&str> = state.entries.keys().filter(|h| h.is_wildcard()).map(Host::base).collect();
    // In Squid's eyes `.b` covers `b` and everything under it: an entry is left out when a
    // wildcard's base is the entry's own base (for an exact host, or a different wildcard) or
    // one of its parent domains.
    let covered = |host: &Host| {
        let base = host.base();
        (!host.is_wildcard() && bases.contains(base))
            || base.match_indices('.').any(|(i, _)| bases.contains(&base[i + 1..]))
    };
    let mut out = format!(
        "# rocsync: AMC hosts allowed for ROC (Squid dstdomain ACL), from plan {plan_id}.\n\
         # Written by rocsync; edits are overwritten. Use it as:\n\
         #   acl roc_amc dstdomain \"/path/to/this/file\"\n"
    );
    for host in state.entries.keys().filter(|h| !covered(h)) {
        match host.is_wildcard() {
            true => writeln!(out, ".{}", host.base()),
            false => writeln!(out, "{host}"),
        }
        .expect("writing to a String cannot fail");
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::catalogue::{Entry, Origin};
    use std::collections::{BTreeMap, BTreeSet};

    pub(crate) fn state_of(hosts: &[&str]) -> State {
        let entry = Entry {
            ports: BTreeSet::from([443]),
            amcs: BTreeMap::new(),
            origins: BTreeSet::from([Origin::Annuaire]),
            since: None,
        };
        State { entries: hosts.iter().map(|h| (Host::parse(h).unwrap(), entry.clone())).collect() }
    }

    #[test]
    fn wildcards_become_dots_and_covered_entries_go() {
        let state = state_of(&["a.test", "*.a.test", "x.a.test", "*.y.a.test", "b.test", "*.c.b.test"]);
        let text = render(&state, 7);
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(body, [".a.test", ".c.b.test", "b.test"]);
        assert!(text.contains("plan 7"));
    }

    /// Squid's own matching: `.b` matches `b` and everything under it; `a` matches `a`.
    fn squid_matches(entry: &str, name: &str) -> bool {
        match entry.strip_prefix('.') {
            Some(base) => name == base || name.ends_with(entry),
            None => name == entry,
        }
    }

    proptest::proptest! {
        #[test]
        fn no_overlap_and_nothing_lost(picks in proptest::collection::vec((0usize..6, proptest::bool::ANY), 0..12)) {
            const NAMES: [&str; 6] = ["a.test", "x.a.test", "y.x.a.test", "b.test", "x.b.test", "ab.test"];
            let hosts: Vec<String> = picks.iter().map(|(i, w)| format!("{}{}", if *w { "*." } else { "" }, NAMES[*i])).collect();
            let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let text = render(&state_of(&refs), 1);
            let entries: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
            for (i, a) in entries.iter().enumerate() {
                for (j, b) in entries.iter().enumerate() {
                    let b_name = b.trim_start_matches('.');
                    proptest::prop_assert!(i == j || !squid_matches(a, b_name), "{} covers {} in {:?}", a, b, entries);
                }
            }
            // Every name the state allows is still allowed by some entry.
            for h in &refs {
                let probe = match h.strip_prefix("*.") { Some(base) => format!("z.{base}"), None => h.to_string() };
                proptest::prop_assert!(entries.iter().any(|e| squid_matches(e, &probe)), "{} lost from {:?}", probe, entries);
            }
        }
    }
}
