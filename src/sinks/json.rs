//! A JSON export of the hosts in force with their provenance, for tools and for firewalls that
//! pull JSON. Stable: `{"generated_by", "plan", "hosts": [{"host", "wildcard", "ports", "amcs":
//! [{"number", "name", "services"}], "origins", "since"}]}`.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::catalogue::{Origin, State};

/// The document, serialised straight from the state: building a `serde_json::Value` tree first
/// took 16 MB for 4,000 hosts, the daemon's largest allocation at every publication. Fields in
/// alphabetical order, as the document has always been written.
#[derive(Serialize)]
struct Document<'a> {
    generated_by: &'static str,
    hosts: Vec<HostOut<'a>>,
    plan: i64,
}

#[derive(Serialize)]
struct HostOut<'a> {
    amcs: Vec<AmcOut<'a>>,
    host: &'a str,
    origins: &'a BTreeSet<Origin>,
    ports: &'a BTreeSet<u16>,
    since: &'a Option<String>,
    wildcard: bool,
}

#[derive(Serialize)]
struct AmcOut<'a> {
    name: &'a str,
    number: &'a str,
    services: &'a BTreeSet<String>,
}

pub fn render(state: &State, plan_id: i64) -> String {
    let hosts = state
        .entries
        .iter()
        .map(|(host, e)| HostOut {
            amcs: e.amcs.iter().map(|(n, u)| AmcOut { name: &u.name, number: n.as_str(), services: &u.services }).collect(),
            host: host.as_str(),
            origins: &e.origins,
            ports: &e.ports,
            since: &e.since,
            wildcard: host.is_wildcard(),
        })
        .collect();
    let doc = Document { generated_by: concat!("rocsync ", env!("CARGO_PKG_VERSION")), hosts, plan: plan_id };
    serde_json::to_string_pretty(&doc).expect("the document serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::squid::tests::state_of;
    use serde_json::json;

    #[test]
    fn hosts_with_provenance() {
        let doc: serde_json::Value = serde_json::from_str(&render(&state_of(&["*.a.test", "b.test"]), 9)).unwrap();
        assert_eq!(doc["plan"], 9);
        assert_eq!(doc["hosts"][0]["host"], "*.a.test");
        assert_eq!(doc["hosts"][0]["wildcard"], true);
        assert_eq!(doc["hosts"][1]["ports"], json!([443]));
        assert_eq!(doc["hosts"][1]["origins"], json!(["annuaire"]));
    }

    /// The typed document is the one the `json!` tree wrote: same keys, same order, same values.
    #[test]
    fn same_document_as_a_value_tree() {
        let state = state_of(&["*.a.test", "b.test", "c.b.test"]);
        let text = render(&state, 4);
        let tree: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string_pretty(&tree).unwrap() + "\n", text, "keys in alphabetical order, as before");
        assert_eq!(tree["hosts"][0]["host"], json!(state.entries.keys().next().unwrap().as_str()));
        assert_eq!(tree["plan"], json!(4));
        assert!(tree["hosts"][0].get("since").is_some(), "since is written, null when unknown");
    }
}
