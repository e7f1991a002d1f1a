//! What a reload changed, for the audit log (`config.reloaded`) and the journal: the settings
//! whose values differ between the file loaded before and the one loaded now, as dotted keys.
//! A valid file holds no secret (they are named by file or variable), so values can be shown.

use std::collections::BTreeMap;

/// Values longer than this are cut: a host list is named, not copied.
const MAX_VALUE: usize = 80;

/// `review.mode: "review" → "auto"; exports.plain.wildcard_style: (unset) → "dot"`, or "no
/// setting changed".
pub fn changes(old: &str, new: &str) -> String {
    let (Ok(old), Ok(new)) = (old.parse::<toml::Table>(), new.parse::<toml::Table>()) else {
        return "the file changed".into();
    };
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &old, &mut before);
    flatten("", &new, &mut after);
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}: {} → {}", shown(before.get(k)), shown(after.get(k))))
        .collect();
    if changed.is_empty() { "no setting changed".into() } else { changed.join("; ") }
}

/// Every value that is not a table, under its dotted key.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, String>) {
    for (key, value) in table.iter() {
        let dotted = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => flatten(&dotted, inner, out),
            other => {
                out.insert(dotted, other.to_string());
            }
        }
    }
}

fn shown(value: Option<&String>) -> String {
    match value {
        None => "(unset)".into(),
        Some(v) if v.chars().count() > MAX_VALUE => format!("{}…", v.chars().take(MAX_VALUE).collect::<String>()),
        Some(v) => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_that_changed_are_named_with_both_values() {
        let old = "[review]\nmode = \"review\"\n[exports.plain]\npath = \"out/hosts.txt\"\n";
        let new = "[review]\nmode = \"auto\"\n[exports.plain]\npath = \"out/hosts.txt\"\nwildcard_style = \"star\"\n";
        assert_eq!(changes(old, new), "exports.plain.wildcard_style: (unset) → \"star\"; review.mode: \"review\" → \"auto\"");
        assert_eq!(changes(new, new), "no setting changed");
        assert_eq!(changes(new, "[review]\nmode = \"auto\"\n"), "exports.plain.path: \"out/hosts.txt\" → (unset); exports.plain.wildcard_style: \"star\" → (unset)");
        assert_eq!(changes("not = [toml", new), "the file changed");
    }

    #[test]
    fn long_values_are_cut() {
        let hosts: Vec<String> = (0..50).map(|i| format!("\"h{i}.test\"")).collect();
        let new = format!("[policy]\nextra_hosts = [{}]\n", hosts.join(", "));
        let text = changes("", &new);
        assert!(text.starts_with("policy.extra_hosts: (unset) → [\"h0.test\""), "{text}");
        assert!(text.ends_with('…') && text.chars().count() < 140, "{text}");
    }
}
