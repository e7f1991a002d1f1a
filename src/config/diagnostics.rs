//! What is wrong with a configuration file, and where: [`Problem`] (line, column, dotted key),
//! [`ConfigError`] (every problem of one file), and how they are found — the raw schema
//! deserialised again and again, each failing key removed and reported with the closest valid
//! key ("did you mean"), so that one run tells every unknown key and every wrong type.

use std::fmt;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use super::schema::RawConfig;

/// One problem with the configuration, with where it is when that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column.
    pub at: Option<(usize, usize)>,
    /// The dotted key (`annuaire.url`).
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.at {
            write!(f, "line {line}, column {col}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `<embedded>`.
    pub origin: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} problem(s)", self.origin, self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  {}: {p}", self.origin)?;
        }
        Ok(())
    }
}

/// Deserialises, and on each error records it, removes the offending key and tries again, so
/// that one run reports every unknown key and every wrong type.
pub(super) fn deserialize_collecting(
    text: &str,
    mut table: toml::Spanned<DeTable<'_>>,
) -> (Option<RawConfig>, Vec<Problem>) {
    let mut problems = Vec::new();
    // Each round removes one key, so the number of keys bounds the loop; this bounds it again.
    for _ in 0..256 {
        match RawConfig::deserialize(toml::de::Deserializer::from(table.clone())) {
            Ok(raw) => return (Some(raw), problems),
            Err(e) => {
                let removed = e.span().and_then(|span| remove_at(table.get_mut(), &span, ""));
                let at = e.span().map(|s| line_col(text, s.start));
                let message = match &removed {
                    Some((key, _)) if e.message().starts_with("unknown field") => unknown_key_message(e.message(), key),
                    _ => e.message().to_owned(),
                };
                problems.push(Problem { at, key: removed.as_ref().map(|(path, _)| path.clone()), message });
                if removed.is_none() {
                    return (None, problems);
                }
            }
        }
    }
    (None, problems)
}

/// "unknown field `urll`, expected one of `url`, `format`" → "unknown key; did you mean `url`?"
fn unknown_key_message(serde_message: &str, path: &str) -> String {
    let key = path.rsplit('.').next().unwrap_or(path);
    let expected = serde_message.split_once("expected").map(|(_, rest)| rest).unwrap_or("");
    let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = valid
        .iter()
        .map(|v| (strsim::jaro_winkler(key, v), *v))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, v)) => format!("unknown key; did you mean `{v}`?"),
        None if valid.is_empty() => "unknown key; this table takes no keys".to_owned(),
        None => format!("unknown key; valid keys here: {}", valid.join(", ")),
    }
}

/// Removes the key whose name or value spans `span`; returns its dotted path.
fn remove_at(table: &mut DeTable<'_>, span: &std::ops::Range<usize>, prefix: &str) -> Option<(String, ())> {
    let hit = table.iter().find(|(k, v)| k.span() == *span || v.span() == *span).map(|(k, _)| k.clone());
    if let Some(key) = hit {
        table.remove(&key);
        return Some((join(prefix, key.get_ref()), ()));
    }
    for (k, v) in table.iter_mut() {
        let path = join(prefix, k.get_ref());
        match v.get_mut() {
            DeValue::Table(t) => {
                if let Some(found) = remove_at(t, span, &path) {
                    return Some(found);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let DeValue::Table(t) = item.get_mut() {
                        if let Some(found) = remove_at(t, span, &format!("{path}[{i}]")) {
                            return Some(found);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

/// The byte offset of the key `dotted` (`a.b.c`, `a.list[2]`) in the document, if it is there.
pub(super) fn key_span(table: &DeTable<'_>, dotted: &str) -> Option<usize> {
    let (head, rest) = match dotted.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (dotted, None),
    };
    let (name, index) = match head.strip_suffix(']').and_then(|h| h.split_once('[')) {
        Some((name, i)) => (name, i.parse::<usize>().ok()),
        None => (head, None),
    };
    let (key, value) = table.iter().find(|(k, _)| k.get_ref() == name)?;
    let value = match (index, value.get_ref()) {
        (Some(i), DeValue::Array(items)) => items.get(i)?,
        _ => value,
    };
    match (rest, value.get_ref()) {
        (None, _) if index.is_some() => Some(value.span().start),
        (None, _) => Some(key.span().start),
        (Some(rest), DeValue::Table(t)) => key_span(t, rest).or(Some(key.span().start)),
        (Some(_), _) => Some(value.span().start),
    }
}

/// 1-based line and column of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

