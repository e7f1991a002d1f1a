//! A JSON export of the hosts in force with their provenance, for tools and for firewalls that
//! pull JSON. Stable: `{"generated_by", "plan", "hosts": [{"host", "wildcard", "ports", "amcs":
//! [{"number", "name", "services"}], "origins", "since"}]}`.

use serde_json::json;

use crate::catalogue::State;

pub fn render(state: &State, plan_id: i64) -> String {
    let hosts: Vec<serde_json::Value> = state
        .entries
        .iter()
        .map(|(host, e)| {
            let amcs: Vec<serde_json::Value> = e
                .amcs
                .iter()
                .map(|(n, u)| json!({"number": n.as_str(), "name": u.name, "services": u.services}))
                .collect();
            json!({"host": host.as_str(), "wildcard": host.is_wildcard(), "ports": e.ports, "amcs": amcs,
                   "origins": e.origins, "since": e.since})
        })
        .collect();
    let doc = json!({"generated_by": concat!("rocsync ", env!("CARGO_PKG_VERSION")), "plan": plan_id, "hosts": hosts});
    serde_json::to_string_pretty(&doc).expect("JSON values serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::squid::tests::state_of;

    #[test]
    fn hosts_with_provenance() {
        let doc: serde_json::Value = serde_json::from_str(&render(&state_of(&["*.a.test", "b.test"]), 9)).unwrap();
        assert_eq!(doc["plan"], 9);
        assert_eq!(doc["hosts"][0]["host"], "*.a.test");
        assert_eq!(doc["hosts"][0]["wildcard"], true);
        assert_eq!(doc["hosts"][1]["ports"], json!([443]));
        assert_eq!(doc["hosts"][1]["origins"], json!(["annuaire"]));
    }
}
