//! Stormshield SNS objects database (CSV import): one `host` object per exact host that has an
//! IPv4 address, named by the host, with its first IPv4 and IPv6 addresses and `dynamic`
//! resolution, so that the firewall keeps resolving it itself; the comment names its AMCs.
//! SNS requires an IPv4 address for a host object: wildcards and IPv6-only hosts are left out
//! (allow them through the proxy export).

use std::net::IpAddr;

use crate::catalogue::State;
use crate::sinks::comment_text;
use crate::resolve::Addresses;

pub fn render(state: &State, addresses: &Addresses) -> String {
    let mut out = String::new();
    for (host, entry) in &state.entries {
        let Some(ips) = addresses.get(host) else { continue };
        let Some(v4) = ips.iter().find(|ip| ip.is_ipv4()) else { continue };
        let v6 = ips.iter().find(|ip| matches!(ip, IpAddr::V6(_))).map(IpAddr::to_string).unwrap_or_default();
        let amcs: Vec<String> = entry.amcs.iter().map(|(n, u)| format!("{} {n}", comment_text(&u.name))).collect();
        let ports: Vec<String> = entry.ports.iter().map(u16::to_string).collect();
        let comment = format!("rocsync ROC tcp/{}: {}", ports.join(","), amcs.join("; ")).replace('"', "'");
        out.push_str(&format!("host,{host},{v4},{v6},dynamic,,\"{comment}\"\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;
    use crate::sinks::squid::tests::state_of;
    use std::collections::BTreeSet;

    #[test]
    fn host_objects_with_their_addresses() {
        let state = state_of(&["idb.a.test", "v6only.a.test", "*.w.a.test", "unresolved.a.test"]);
        let addresses = Addresses::from([
            (Host::parse("idb.a.test").unwrap(), BTreeSet::from(["198.18.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap()])),
            (Host::parse("v6only.a.test").unwrap(), BTreeSet::from(["2001:db8::2".parse().unwrap()])),
        ]);
        assert_eq!(render(&state, &addresses), "host,idb.a.test,198.18.0.1,2001:db8::1,dynamic,,\"rocsync ROC tcp/443: \"\n");
    }
}
