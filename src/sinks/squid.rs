//! Squid `dstdomain` ACL file.
//!
//! A wildcard `*.a.test` becomes `.a.test`. Squid's `.a.test` also matches `a.test` itself, so
//! the export is that much broader than the annuaire's wildcard. Squid warns about, and ignores,
//! an entry that another one already covers (`x.a.test` under `.a.test`): such entries are left
//! out, so that `squid -k parse` stays quiet.

use std::fmt::Write;

use crate::catalogue::State;
use crate::host::Host;

pub fn render(state: &State, plan_id: i64) -> String {
    let wildcards: Vec<&Host> = state.entries.keys().filter(|h| h.is_wildcard()).collect();
    // In Squid's eyes `.b` covers `b` and everything under it.
    let covered = |host: &Host| {
        wildcards.iter().any(|w| {
            *w != host && (host.base() == w.base() || Host::covers(w, host))
        })
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
}
