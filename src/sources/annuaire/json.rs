//! The JSON answer (`annuaire-urls/1`, contract §1a).
//!
//! The document is read as a `serde_json::Value` and walked by hand rather than into typed
//! structs: one organism with a number where a string belongs must be rejected on its own, not
//! take the whole answer down with it.

use serde_json::{Map, Value};

use super::{AnswerError, RawAnswer, RawOrganisme, RawService, Rejected};

pub(crate) fn parse(body: &[u8]) -> Result<RawAnswer, AnswerError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json ends its message with the position, which the error already carries.
        let message = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        AnswerError::Json { line: e.line(), column: e.column(), message: message.strip_suffix(&position).unwrap_or(&message).to_owned() }
    })?;
    let Value::Object(top) = doc else {
        return Err(AnswerError::MissingList("the JSON answer is not an object".into()));
    };
    let Some(list) = top.get("organismes") else {
        return Err(AnswerError::MissingList("the JSON answer has no `organismes` list".into()));
    };
    let Value::Array(list) = list else {
        return Err(AnswerError::MissingList("`organismes` is not a list".into()));
    };
    let mut raw = RawAnswer {
        serial: top.get("serie").map(|v| ("serie".to_owned(), scalar_text(v))),
        generated_at: top.get("genere_le").and_then(Value::as_str).map(str::to_owned),
        ..RawAnswer::default()
    };
    for (i, item) in list.iter().enumerate() {
        let place = format!("organismes[{i}]");
        match item {
            Value::Object(obj) => raw.organismes.push(organisme(obj, place, &mut raw.rejected)),
            other => raw.rejected.push(Rejected {
                amc: None,
                value: scalar_text(other),
                reason: "an organism must be a JSON object".into(),
                place,
            }),
        }
    }
    Ok(raw)
}

fn organisme(obj: &Map<String, Value>, place: String, rejected: &mut Vec<Rejected>) -> RawOrganisme {
    let mut org = RawOrganisme {
        number: string_field(obj, "numero_amc", &place, None, rejected),
        ..RawOrganisme::default()
    };
    let amc = org.number.clone();
    org.name = string_field(obj, "libelle", &place, amc.as_deref(), rejected);
    org.state = string_field(obj, "etat", &place, amc.as_deref(), rejected);
    for (j, svc) in array_field(obj, "services", &place, amc.as_deref(), rejected).iter().enumerate() {
        let svc_place = format!("{place}.services[{j}]");
        match svc {
            Value::Object(s) => org.services.push(RawService {
                code: string_field(s, "code", &svc_place, amc.as_deref(), rejected),
                url: string_field(s, "url", &svc_place, amc.as_deref(), rejected),
                place: svc_place,
            }),
            other => rejected.push(Rejected {
                amc: amc.clone(),
                value: scalar_text(other),
                reason: "a service must be a JSON object".into(),
                place: svc_place,
            }),
        }
    }
    for (j, dom) in array_field(obj, "domaines", &place, amc.as_deref(), rejected).iter().enumerate() {
        let dom_place = format!("{place}.domaines[{j}]");
        match dom {
            Value::String(s) => org.domains.push((dom_place, s.clone())),
            other => rejected.push(Rejected {
                amc: amc.clone(),
                value: scalar_text(other),
                reason: "a domain must be a string".into(),
                place: dom_place,
            }),
        }
    }
    org.place = place;
    org
}

/// A string member; anything else present under that name is rejected and read as absent.
fn string_field(
    obj: &Map<String, Value>,
    key: &str,
    place: &str,
    amc: Option<&str>,
    rejected: &mut Vec<Rejected>,
) -> Option<String> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            rejected.push(Rejected {
                amc: amc.map(str::to_owned),
                value: scalar_text(other),
                reason: format!("`{key}` must be a string"),
                place: format!("{place}.{key}"),
            });
            None
        }
    }
}

/// An array member; absent or `null` is empty, anything else is rejected.
fn array_field<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    place: &str,
    amc: Option<&str>,
    rejected: &mut Vec<Rejected>,
) -> &'a [Value] {
    match obj.get(key) {
        None | Some(Value::Null) => &[],
        Some(Value::Array(items)) => items,
        Some(other) => {
            rejected.push(Rejected {
                amc: amc.map(str::to_owned),
                value: scalar_text(other),
                reason: format!("`{key}` must be a list"),
                place: format!("{place}.{key}"),
            });
            &[]
        }
    }
}

/// A short text for a value, to show in a rejection.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => {
            let text = other.to_string();
            if text.len() > 80 { format!("{}…", &text[..text.floor_char_boundary(80)]) } else { text }
        }
    }
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
    }
}
