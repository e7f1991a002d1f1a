//! HAProxy ACL file: one regular expression per line, for `-m reg`, so that one file holds
//! both exact hosts (`^idb\.a\.test$`) and wildcards (`^.+\.api\.a\.test$`, sub-domains only,
//! as the annuaire means it). Use it as
//! `acl roc_amc req.ssl_sni -m reg -i -f /path/to/this/file` (or `hdr(host)` in HTTP mode).
//! Host names hold only `a-z 0-9 - . *`, so escaping the dots is all the quoting needed.

use crate::catalogue::State;

pub fn render(state: &State, plan_id: i64) -> String {
    let mut out = format!("# rocsync: AMC hosts allowed for ROC (HAProxy ACL, -m reg), from plan {plan_id}.\n");
    for host in state.entries.keys() {
        let escaped = host.base().replace('.', "\\.");
        if host.is_wildcard() {
            out.push_str(&format!("^.+\\.{escaped}$\n"));
        } else {
            out.push_str(&format!("^{escaped}$\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::squid::tests::state_of;

    #[test]
    fn exact_hosts_and_sub_domain_wildcards() {
        let text = render(&state_of(&["idb.a.test", "*.api.a.test"]), 4);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines, ["^.+\\.api\\.a\\.test$", "^idb\\.a\\.test$"]);
    }
}
