//! An annuaire answer once read: the AMCs it lists, with their services and domains, and what
//! could not be understood. A core type: the parsers in [`crate::sources::annuaire`] fill it,
//! and the catalogue is built from it, without either knowing of the other.

use std::fmt;

use serde::Serialize;

use crate::amc::{AmcNumber, AmcState};
use crate::host::Host;

/// The wire format of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Xml,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Xml => "xml",
        })
    }
}

/// An annuaire answer after validation.
#[derive(Debug, Clone)]
pub struct Answer {
    pub format: Format,
    /// The annuaire's `serie`: a number that grows with each publication.
    pub serial: Option<u64>,
    /// The annuaire's `genere_le`, as written.
    pub generated_at: Option<String>,
    pub amcs: Vec<Amc>,
    /// Values that could not be understood, with why.
    pub rejected: Vec<Rejected>,
    /// AMCs whose organism was rejected whole (listed twice, ambiguous, without a valid state):
    /// the answer says nothing trustworthy about them, so what is in force for them stays.
    pub held: Vec<AmcNumber>,
    /// Things kept but worth a look (an unknown `etat`).
    pub warnings: Vec<String>,
}

/// One AMC as the annuaire lists it.
#[derive(Debug, Clone)]
pub struct Amc {
    pub number: AmcNumber,
    pub name: String,
    pub state: AmcState,
    pub services: Vec<Service>,
    /// Extra hosts of `domaines`, allowed on port 443.
    pub domains: Vec<Host>,
}

/// One web service of an AMC: its code (`IDB`, `SIM`, `CLC`, `DEL` or other) and where it is.
#[derive(Debug, Clone)]
pub struct Service {
    pub code: String,
    pub host: Host,
    pub port: u16,
    /// The full URL, for display only.
    pub url: String,
}

/// A value of the answer that rocsync did not accept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The AMC number as written (escaped), when the value belongs to an AMC.
    pub amc: Option<String>,
    /// The value as written, escaped and cut to a short line: it is shown to people.
    pub value: String,
    pub reason: String,
    /// Where in the document: a JSON path or an XML line.
    pub place: String,
}

/// How much of a rejected value is kept to show.
const SHOWN_VALUE: usize = 200;

impl Rejected {
    /// A rejection; the value and the AMC number are escaped here, once, so that a hostile
    /// value cannot add a line to a log, a plan or a mail that quotes it.
    pub(crate) fn new(amc: Option<&str>, value: &str, reason: String, place: String) -> Rejected {
        Rejected {
            amc: amc.map(|a| crate::text::excerpt(a, 40)),
            value: crate::text::excerpt(value, SHOWN_VALUE),
            reason,
            place,
        }
    }
}

