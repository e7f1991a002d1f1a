//! The validated host name: the only way a name from outside reaches a rule or a file.
//!
//! A [`Host`] is either an exact name (`idb.roc.a.test`) or a wildcard (`*.api.a.test`, every
//! sub-domain of `api.a.test` but not `api.a.test` itself). Construction is the validation:
//! lower-cased, trailing dot stripped, IDNA to ASCII (punycode), LDH labels of 1–63 bytes,
//! at most 253 bytes, a wildcard only as a leading `*.`, and never a wildcard over a whole public
//! suffix (`*.fr`, `*.test`, `*.co.uk`, `*.blogspot.com`). What is accepted therefore holds only
//! `a-z 0-9 - . *`, which no nft script, Squid ACL file or shell gives a meaning to.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest host name DNS can carry, in bytes, without the trailing dot.
const MAX_NAME: usize = 253;
/// Longest label DNS can carry, in bytes.
const MAX_LABEL: usize = 63;

/// A host name, or a `*.`-wildcard over the sub-domains of one, that passed validation.
///
/// ```
/// use rocsync::host::Host;
///
/// let host = Host::parse("IDB.Mutuelle-Générale.test.").unwrap();
/// assert_eq!(host.as_str(), "idb.xn--mutuelle-gnrale-knbb.test");
///
/// let wildcard = Host::parse("*.api.mutuelle.test").unwrap();
/// assert!(wildcard.matches("v2.api.mutuelle.test"));
/// assert!(!wildcard.matches("api.mutuelle.test"));
///
/// assert!(Host::parse("*.co.uk").is_err()); // a whole public suffix
/// assert!(Host::parse("a.test; rm -rf /").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host {
    /// The normalised text, with its `*.` when it is a wildcard. Sorting on it sorts the way
    /// operators read lists.
    text: String,
}

/// Why a value is not a host name rocsync will allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The value is empty (or only a dot).
    #[error("empty host name")]
    Empty,
    /// Longer than DNS allows.
    #[error("host name is {len} bytes long, more than {MAX_NAME}")]
    TooLong { len: usize },
    /// A `*` anywhere but as the whole first label.
    #[error("a wildcard is only allowed as a leading `*.`")]
    BadWildcard,
    /// IDNA (UTS #46) refused the name: invalid Unicode, a disallowed code point, bad punycode.
    #[error("not a valid internationalised domain name ({0})")]
    Idna(String),
    /// Two dots in a row, or a leading dot.
    #[error("empty label (two dots in a row, or a leading dot)")]
    EmptyLabel,
    /// A label longer than DNS allows.
    #[error("label `{label}` is {len} bytes long, more than {MAX_LABEL}")]
    LabelTooLong { label: String, len: usize },
    /// A character outside letters, digits and hyphen.
    #[error("character {ch:?} is not allowed in a host name (only letters, digits, `-` and `.`)")]
    BadChar { ch: char },
    /// A label that starts or ends with a hyphen.
    #[error("label `{label}` starts or ends with `-`")]
    HyphenEdge { label: String },
    /// A name of one label: a top-level domain, or a name that only a local resolver knows.
    #[error("`{name}` has a single label; an AMC host is a fully qualified name")]
    SingleLabel { name: String },
    /// The last label is numeric: this is an IP address, or looks like one.
    #[error("`{name}` looks like an IP address, not a host name")]
    NumericTld { name: String },
    /// A wildcard whose base is a public suffix would open a whole registry.
    #[error("`*.{suffix}` would allow every domain under the public suffix `{suffix}`")]
    PublicSuffixWildcard { suffix: String },
}

impl Host {
    /// Validates and normalises `input`. The error says why, never echoing more than the value.
    pub fn parse(input: &str) -> Result<Host, HostError> {
        if input.len() > 4 * MAX_NAME {
            return Err(HostError::TooLong { len: input.len() });
        }
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() || trimmed == "*" {
            return Err(HostError::Empty);
        }
        let (wildcard, rest) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if rest.is_empty() {
            return Err(HostError::Empty);
        }
        if rest.contains('*') {
            return Err(HostError::BadWildcard);
        }
        let name = if rest.is_ascii() {
            let lower = rest.to_ascii_lowercase();
            check_ldh(&lower)?;
            // Punycode labels (`xn--…`) must also decode to a valid IDN.
            if lower.split('.').any(|label| label.starts_with("xn--")) {
                idna::domain_to_ascii_strict(&lower).map_err(|e| HostError::Idna(e.to_string()))?;
            }
            lower
        } else {
            let ascii =
                idna::domain_to_ascii_strict(rest).map_err(|e| HostError::Idna(e.to_string()))?;
            check_ldh(&ascii)?;
            ascii
        };
        if wildcard && is_public_suffix(&name) {
            return Err(HostError::PublicSuffixWildcard { suffix: name });
        }
        if !name.contains('.') {
            return Err(HostError::SingleLabel { name });
        }
        let last = name.rsplit('.').next().unwrap_or_default();
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HostError::NumericTld { name });
        }
        let text = if wildcard { format!("*.{name}") } else { name };
        Ok(Host { text })
    }

    /// True for `*.a.test`.
    pub fn is_wildcard(&self) -> bool {
        self.text.starts_with("*.")
    }

    /// The name without its `*.`: `a.test` for both `a.test` and `*.a.test`.
    pub fn base(&self) -> &str {
        self.text.strip_prefix("*.").unwrap_or(&self.text)
    }

    /// The normalised text, `*.a.test` for a wildcard.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a request to the concrete host name `name` (already lower-case ASCII) is allowed
    /// by this entry: the same name, or for a wildcard, a name strictly under its base.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        if self.is_wildcard() {
            is_strictly_under(name, self.base())
        } else {
            name == self.text
        }
    }

    /// Whether every name this entry allows is also allowed by `self`.
    pub fn covers(&self, other: &Host) -> bool {
        if self == other {
            return true;
        }
        self.is_wildcard() && is_strictly_under(other.base(), self.base())
    }
}

/// `name` is `x.base` for some non-empty `x`.
fn is_strictly_under(name: &str, base: &str) -> bool {
    name.len() > base.len() + 1
        && name.ends_with(base)
        && name.as_bytes()[name.len() - base.len() - 1] == b'.'
}

/// Letters, digits and hyphens, labels of 1 to 63 bytes, 253 in all.
fn check_ldh(name: &str) -> Result<(), HostError> {
    if name.len() > MAX_NAME {
        return Err(HostError::TooLong { len: name.len() });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        if label.len() > MAX_LABEL {
            return Err(HostError::LabelTooLong { label: label.to_owned(), len: label.len() });
        }
        if let Some(ch) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(HostError::BadChar { ch });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::HyphenEdge { label: label.to_owned() });
        }
    }
    Ok(())
}

/// Whether `name` is itself a public suffix per the Public Suffix List (ICANN and private
/// sections). A top-level domain the list does not know (`test`) counts as one, by the list's
/// implicit `*` rule.
pub fn is_public_suffix(name: &str) -> bool {
    psl::suffix_str(name) == Some(name)
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.text)
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Host({})", self.text)
    }
}

impl std::str::FromStr for Host {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Host::parse(s)
    }
}

impl Serialize for Host {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// Deserialising validates again: a host read back from the store or a plan file passes the
/// same gate as one read from the annuaire.
impl<'de> Deserialize<'de> for Host {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Host::parse(&text).map_err(|e| serde::de::Error::custom(format!("`{text}`: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> String {
        Host::parse(s).unwrap_or_else(|e| panic!("{s:?} rejected: {e}")).to_string()
    }

    #[test]
    fn normalises_case_trailing_dot_and_idna() {
        assert_eq!(ok("IDB.Roc.Mutuelle-Exemple.TEST."), "idb.roc.mutuelle-exemple.test");
        assert_eq!(ok("mutuelle-générale.test"), "xn--mutuelle-gnrale-knbb.test");
        assert_eq!(ok("*.API.a-b.test"), "*.api.a-b.test");
        assert_eq!(ok("XN--MUTUELLE-GNRALE-KNBB.test"), "xn--mutuelle-gnrale-knbb.test");
    }

    #[test]
    fn rejects_what_dns_cannot_carry() {
        let label = "a".repeat(64);
        let cases: &[(&str, HostError)] = &[
            ("", HostError::Empty),
            (".", HostError::Empty),
            ("*.", HostError::Empty),
            ("a..test", HostError::EmptyLabel),
            (".a.test", HostError::EmptyLabel),
            ("a_b.test", HostError::BadChar { ch: '_' }),
            ("a b.test", HostError::BadChar { ch: ' ' }),
            ("a.test;", HostError::BadChar { ch: ';' }),
            ("-a.test", HostError::HyphenEdge { label: "-a".into() }),
            ("a.*.test", HostError::BadWildcard),
            ("*a.test", HostError::BadWildcard),
            ("**.a.test", HostError::BadWildcard),
            ("localhost", HostError::SingleLabel { name: "localhost".into() }),
            ("198.18.0.1", HostError::NumericTld { name: "198.18.0.1".into() }),
        ];
        for (input, want) in cases {
            assert_eq!(Host::parse(input).as_ref(), Err(want), "input {input:?}");
        }
        assert!(matches!(
            Host::parse(&format!("{label}.test")),
            Err(HostError::LabelTooLong { len: 64, .. })
        ));
        let long = vec!["abcdefghi"; 26].join(".") + ".test";
        assert!(matches!(Host::parse(&long), Err(HostError::TooLong { .. })));
        assert!(matches!(Host::parse("xn--zz.test"), Err(HostError::Idna(_))));
        assert!(matches!(Host::parse("a\u{0}b.test"), Err(_)));
    }

    #[test]
    fn refuses_wildcards_over_public_suffixes() {
        for (input, suffix) in [
            ("*.fr", "fr"),
            ("*.test", "test"),
            ("*.co.uk", "co.uk"),
            ("*.gouv.fr", "gouv.fr"),
            ("*.blogspot.com", "blogspot.com"),
        ] {
            assert_eq!(
                Host::parse(input),
                Err(HostError::PublicSuffixWildcard { suffix: suffix.into() }),
                "input {input}"
            );
        }
        assert_eq!(ok("*.api.mutuelle-exemple.test"), "*.api.mutuelle-exemple.test");
        assert_eq!(ok("*.mutuelle.fr"), "*.mutuelle.fr");
    }

    #[test]
    fn wildcard_matches_sub_domains_only() {
        let w = Host::parse("*.api.a.test").unwrap();
        assert!(w.matches("x.api.a.test"));
        assert!(w.matches("y.x.api.a.test."));
        assert!(!w.matches("api.a.test"));
        assert!(!w.matches("xapi.a.test"));
        let e = Host::parse("api.a.test").unwrap();
        assert!(e.matches("api.a.test"));
        assert!(!e.matches("x.api.a.test"));
        assert!(w.covers(&Host::parse("x.api.a.test").unwrap()));
        assert!(w.covers(&Host::parse("*.x.api.a.test").unwrap()));
        assert!(!w.covers(&e));
        assert!(!e.covers(&w));
    }

    #[test]
    fn deserialising_validates() {
        let h: Host = serde_json::from_str("\"A.Test\"").unwrap();
        assert_eq!(h.as_str(), "a.test");
        let err = serde_json::from_str::<Host>("\"a;b.test\"").unwrap_err();
        assert!(err.to_string().contains("a;b.test"), "{err}");
    }

    /// Characters that mean something to nft, Squid, a shell or a line-based list.
    const DANGEROUS: &[char] = &[
        ' ', '\t', '\n', '\r', '"', '\'', '`', ';', '{', '}', '(', ')', '$', '\\', '#', '|', '&',
        '<', '>', '/', ':', ',', '=', '@', '!', '[', ']', '\0', '~',
    ];

    proptest! {
        #[test]
        fn accepted_hosts_carry_no_meta_characters(input in "\\PC{0,80}|[a-zA-Z0-9.*_;${}\"' \\n-]{0,40}") {
            if let Ok(host) = Host::parse(&input) {
                let text = host.as_str();
                prop_assert!(!text.chars().any(|c| DANGEROUS.contains(&c)), "{text:?}");
                prop_assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()
                    || b == b'-' || b == b'.' || b == b'*'), "{text:?}");
                prop_assert!(!text[1..].contains('*'));
                prop_assert!(text.len() <= MAX_NAME + 2);
            }
        }

        #[test]
        fn parsing_is_idempotent(labels in proptest::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", 2..5),
                                 wildcard in any::<bool>()) {
            // A label with `--` in its third and fourth places (`xn--…`) is an IDNA A-label, which
            // must decode: the generator's plain ASCII labels are not those.
            prop_assume!(!labels.iter().any(|l| l.get(2..4) == Some("--")));
            let input = format!("{}{}.test", if wildcard { "*." } else { "" }, labels.join("."));
            let host = Host::parse(&input).unwrap();
            prop_assert_eq!(Host::parse(host.as_str()).unwrap(), host.clone());
            prop_assert_eq!(host.as_str(), input.to_ascii_lowercase());
        }
    }
}
