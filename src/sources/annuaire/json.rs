//! The JSON answer (`annuaire-urls/1`, contract §1a).
//!
//! The document is read into a [`Node`] tree and walked by hand rather than into typed structs:
//! one organism with a number where a string belongs must be rejected on its own, not take the
//! whole answer down with it. The tree keeps every member of an object in order, duplicates
//! included: `serde_json::Value` keeps the last of two `"etat"` keys, and an organism that says
//! both `sorti` and `cercle_de_confiance` must be rejected as ambiguous, not read either way.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{AnswerError, RawAnswer, RawOrganisme, RawService, Rejected};

/// A JSON value whose objects keep duplicate members.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    /// The number as written by serde_json (`42`, `1.5`).
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Number(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            members.push((key, value));
        }
        Ok(Node::Object(members))
    }
}

type Members = [(String, Node)];

/// The first member named `key`.
fn get<'a>(obj: &'a Members, key: &str) -> Option<&'a Node> {
    obj.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The names that appear more than once among `obj`'s members, each once, in order.
fn duplicate_keys(obj: &Members) -> Vec<&str> {
    let mut dups: Vec<&str> = Vec::new();
    for (i, (key, _)) in obj.iter().enumerate() {
        if obj[..i].iter().any(|(k, _)| k == key) && !dups.contains(&key.as_str()) {
            dups.push(key);
        }
    }
    dups
}

pub(crate) fn parse(body: &[u8]) -> Result<RawAnswer, AnswerError> {
    let doc: Node = serde_json::from_slice(body).map_err(|e| {
        // serde_json ends its message with the position, which the error already carries.
        let message = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        AnswerError::Json { line: e.line(), column: e.column(), message: message.strip_suffix(&position).unwrap_or(&message).to_owned() }
    })?;
    let Node::Object(top) = doc else {
        return Err(AnswerError::MissingList("the JSON answer is not an object".into()));
    };
    let dups = duplicate_keys(&top);
    if !dups.is_empty() {
        return Err(AnswerError::MissingList(format!(
            "the JSON answer has the member(s) {} more than once: it is ambiguous",
            quoted(&dups)
        )));
    }
    let Some(list) = get(&top, "organismes") else {
        return Err(AnswerError::MissingList("the JSON answer has no `organismes` list".into()));
    };
    let Node::Array(list) = list else {
        return Err(AnswerError::MissingList("`organismes` is not a list".into()));
    };
    let mut raw = RawAnswer {
        serial: get(&top, "serie").map(|v| ("serie".to_owned(), scalar_text(v))),
        generated_at: match get(&top, "genere_le") {
            Some(Node::String(s)) => Some(s.clone()),
            _ => None,
        },
        ..RawAnswer::default()
    };
    for (i, item) in list.iter().enumerate() {
        let place = format!("organismes[{i}]");
        match item {
            Node::Object(obj) => raw.organismes.push(organisme(obj, place, &mut raw.rejected)),
            other => raw.rejected.push(Rejected::new(None, &scalar_text(other), "an organism must be a JSON object".into(), place)),
        }
    }
    Ok(raw)
}

fn organisme(obj: &Members, place: String, rejected: &mut Vec<Rejected>) -> RawOrganisme {
    let mut org = RawOrganisme {
        number: string_field(obj, "numero_amc", &place, None, rejected),
        ..RawOrganisme::default()
    };
    let amc = org.number.clone();
    let dups = duplicate_keys(obj);
    if !dups.is_empty() {
        org.ambiguous.push(format!("the organism has the member(s) {} more than once", quoted(&dups)));
    }
    org.name = string_field(obj, "libelle", &place, amc.as_deref(), rejected);
    org.state = string_field(obj, "etat", &place, amc.as_deref(), rejected);
    for (j, svc) in array_field(obj, "services", &place, amc.as_deref(), rejected).iter().enumerate() {
        let svc_place = format!("{place}.services[{j}]");
        match svc {
            Node::Object(s) => {
                let dups = duplicate_keys(s);
                if !dups.is_empty() {
                    org.ambiguous.push(format!("{svc_place} has the member(s) {} more than once", quoted(&dups)));
                }
                org.services.push(RawService {
                    code: string_field(s, "code", &svc_place, amc.as_deref(), rejected),
                    url: string_field(s, "url", &svc_place, amc.as_deref(), rejected),
                    place: svc_place,
                })
            }
            other => rejected.push(Rejected::new(amc.as_deref(), &scalar_text(other), "a service must be a JSON object".into(), svc_place)),
        }
    }
    for (j, dom) in array_field(obj, "domaines", &place, amc.as_deref(), rejected).iter().enumerate() {
        let dom_place = format!("{place}.domaines[{j}]");
        match dom {
            Node::String(s) => org.domains.push((dom_place, s.clone())),
            other => rejected.push(Rejected::new(amc.as_deref(), &scalar_text(other), "a domain must be a string".into(), dom_place)),
        }
    }
    org.place = place;
    org
}

/// A string member; anything else present under that name is rejected and read as absent.
fn string_field(obj: &Members, key: &str, place: &str, amc: Option<&str>, rejected: &mut Vec<Rejected>) -> Option<String> {
    match get(obj, key) {
        None | Some(Node::Null) => None,
        Some(Node::String(s)) => Some(s.clone()),
        Some(other) => {
            rejected.push(Rejected::new(amc, &scalar_text(other), format!("`{key}` must be a string"), format!("{place}.{key}")));
            None
        }
    }
}

/// An array member; absent or `null` is empty, anything else is rejected.
fn array_field<'a>(obj: &'a Members, key: &str, place: &str, amc: Option<&str>, rejected: &mut Vec<Rejected>) -> &'a [Node] {
    match get(obj, key) {
        None | Some(Node::Null) => &[],
        Some(Node::Array(items)) => items,
        Some(other) => {
            rejected.push(Rejected::new(amc, &scalar_text(other), format!("`{key}` must be a list"), format!("{place}.{key}")));
            &[]
        }
    }
}

/// A short text for a value, to show in a rejection.
fn scalar_text(v: &Node) -> String {
    match v {
        Node::Null => "null".into(),
        Node::Bool(b) => b.to_string(),
        Node::Number(n) | Node::String(n) => n.clone(),
        Node::Array(_) => "[…]".into(),
        Node::Object(_) => "{…}".into(),
    }
}

fn quoted(keys: &[&str]) -> String {
    keys.iter().map(|k| format!("`{}`", crate::text::escape(k))).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_list_is_an_error_not_an_empty_list() {
        assert!(matches!(parse(br#"{"serie": 1}"#), Err(AnswerError::MissingList(_))));
        assert!(matches!(parse(br#"{"organismes": {}}"#), Err(AnswerError::MissingList(_))));
        assert!(matches!(parse(br#"[1,2]"#), Err(AnswerError::MissingList(_))));
        assert_eq!(parse(br#"{"organismes": []}"#).unwrap().organismes.len(), 0);
    }

    #[test]
    fn truncated_json_names_the_place() {
        let err = parse(b"{\"organismes\": [\n {\"numero_amc\": \"12345").unwrap_err();
        assert!(matches!(err, AnswerError::Json { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let raw = parse(br#"{"organismes": [{"numero_amc": "123456789", "nouveau": {"x": 1}}], "autre": 1}"#)
            .unwrap();
        assert_eq!(raw.organismes.len(), 1);
        assert!(raw.rejected.is_empty());
        assert!(raw.organismes[0].ambiguous.is_empty());
    }

    #[test]
    fn duplicate_members_make_an_organism_ambiguous() {
        let raw = parse(br#"{"organismes": [
            {"numero_amc": "123456789", "etat": "sorti", "etat": "cercle_de_confiance"},
            {"numero_amc": "223456789", "etat": "cercle_de_confiance",
             "services": [{"code": "IDB", "url": "https://a.test/", "url": "https://b.test/"}]},
            {"numero_amc": "323456789", "etat": "cercle_de_confiance"}]}"#)
        .unwrap();
        assert!(raw.organismes[0].ambiguous[0].contains("`etat`"), "{:?}", raw.organismes[0].ambiguous);
        assert!(raw.organismes[1].ambiguous[0].contains("services[0]"), "{:?}", raw.organismes[1].ambiguous);
        assert!(raw.organismes[2].ambiguous.is_empty());
        // Twice the list itself: the whole answer is ambiguous.
        assert!(matches!(parse(br#"{"organismes": [], "organismes": []}"#), Err(AnswerError::MissingList(m)) if m.contains("ambiguous")));
    }
}
