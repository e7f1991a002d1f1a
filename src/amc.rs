//! Who an AMC is: its number and its state in the circle of trust.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An AMC number (RNM number of 9 digits, or prefectoral / teletransmission number of 8 to 10),
/// kept exactly as the annuaire wrote it. Two numbers are the same AMC when they are equal once
/// leading zeros are stripped: `012345678` and `12345678` name one AMC.
#[derive(Clone)]
pub struct AmcNumber {
    raw: String,
}

/// Why a value is not an AMC number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AMC number must be 8 to 10 digits")]
pub struct AmcNumberError;

impl AmcNumber {
    pub fn parse(raw: &str) -> Result<AmcNumber, AmcNumberError> {
        if (8..=10).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AmcNumber { raw: raw.to_owned() })
        } else {
            Err(AmcNumberError)
        }
    }

    /// As the annuaire wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The comparison key: no leading zeros.
    fn key(&self) -> &str {
        let stripped = self.raw.trim_start_matches('0');
        if stripped.is_empty() { "0" } else { stripped }
    }
}

impl PartialEq for AmcNumber {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for AmcNumber {}
impl Hash for AmcNumber {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}
impl PartialOrd for AmcNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
/// Numeric order: shorter keys first, then lexical.
impl Ord for AmcNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.key(), other.key());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl fmt::Display for AmcNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.raw)
    }
}
impl fmt::Debug for AmcNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmcNumber({})", self.raw)
    }
}
impl Serialize for AmcNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}
impl<'de> Deserialize<'de> for AmcNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        AmcNumber::parse(&raw).map_err(|e| serde::de::Error::custom(format!("`{raw}`: {e}")))
    }
}
impl std::str::FromStr for AmcNumber {
    type Err = AmcNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AmcNumber::parse(s)
    }
}

/// An AMC's `etat` in the annuaire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AmcState {
    /// In production for every hospital.
    CircleOfTrust,
    /// In production only for the hospitals that chose it as their "AMC miroir".
    UnderWatch,
    /// Left the circle of trust: its hosts are closed.
    Left,
    /// A value the contract does not know; kept, warned about, treated as `CircleOfTrust`.
    Unknown(String),
}

impl AmcState {
    pub fn parse(raw: &str) -> AmcState {
        match raw {
            "cercle_de_confiance" => AmcState::CircleOfTrust,
            "production_sous_surveillance" => AmcState::UnderWatch,
            "sorti" => AmcState::Left,
            other => AmcState::Unknown(other.to_owned()),
        }
    }

    /// The annuaire's own word for it.
    pub fn as_str(&self) -> &str {
        match self {
            AmcState::CircleOfTrust => "cercle_de_confiance",
            AmcState::UnderWatch => "production_sous_surveillance",
            AmcState::Left => "sorti",
            AmcState::Unknown(raw) => raw,
        }
    }
}

impl Serialize for AmcState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for AmcState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(AmcState::parse(&String::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_without_leading_zeros() {
        let a = AmcNumber::parse("012345678").unwrap();
        let b = AmcNumber::parse("12345678").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "012345678");
        assert!(AmcNumber::parse("99999999").unwrap() < AmcNumber::parse("0100000000").unwrap());
    }

    #[test]
    fn numbers_are_8_to_10_digits() {
        for bad in ["1234567", "12345678901", "12345678a", "", " 12345678", "+12345678"] {
            assert_eq!(AmcNumber::parse(bad), Err(AmcNumberError), "{bad:?}");
        }
    }
}
