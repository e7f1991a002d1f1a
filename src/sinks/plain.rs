//! A plain list, one host per line, for firewalls that pull external domain lists (Palo Alto
//! EDL, Fortinet threat feeds, Stormshield). No comments: not every reader of such lists skips
//! them.

use serde::{Deserialize, Serialize};

use crate::catalogue::State;

/// How a wildcard is written (`exports.plain.wildcard_style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WildcardStyle {
    /// `*.a.test`
    #[default]
    Star,
    /// `.a.test`
    Dot,
}

pub fn render(state: &State, style: WildcardStyle) -> String {
    let mut lines: Vec<String> = state
        .entries
        .keys()
        .map(|h| match (h.is_wildcard(), style) {
            (true, WildcardStyle::Dot) => format!(".{}", h.base()),
            _ => h.to_string(),
        })
        .collect();
    lines.sort();
    lines.dedup();
    lines.into_iter().map(|l| l + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::squid::tests::state_of;

    #[test]
    fn both_styles() {
        let state = state_of(&["b.test", "*.a.test", "a.test"]);
        assert_eq!(render(&state, WildcardStyle::Star), "*.a.test\na.test\nb.test\n");
        assert_eq!(render(&state, WildcardStyle::Dot), ".a.test\na.test\nb.test\n");
        assert_eq!(render(&State::default(), WildcardStyle::Dot), "");
    }
}
