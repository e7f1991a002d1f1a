//! What enforces a state. The renderers (`squid`, `plain`, `nft_script`) are pure functions of
//! the state; [`files::FileSink`] writes what they render, atomically.
//!
//! Every sink only ever sees validated [`crate::host::Host`] values: nothing from outside
//! reaches a file without passing host validation.

pub mod files;
pub mod haproxy;
pub mod json;
pub mod netlink;
pub mod nft_script;
pub mod nftables;
pub mod plain;
pub mod squid;
pub mod stormshield;
pub mod readback;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::catalogue::State;
use crate::resolve::Millis;
use crate::sinks::nft_script::Addresses;

/// What the resolver knows of the hosts in force, for the sinks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Each host's addresses, those in their grace included.
    pub addresses: Addresses,
    /// The addresses that answers no longer give, with the end of their grace.
    pub leaving: BTreeMap<IpAddr, Millis>,
}

/// Something that enforces a state.
pub trait Sink {
    /// A short name for logs and messages (`files`, `nftables`).
    fn name(&self) -> &str;
    /// Enforces `state`, produced by plan `plan_id`, with what the resolver knows of its hosts. On
    /// error, what was in force stays. The warnings say what went wrong after the state was
    /// enforced (a post-write command).
    fn apply(&self, state: &State, plan_id: i64, resolved: &Resolved) -> Result<Vec<String>, SinkError>;
    /// What differs between what this sink enforces and `state`: one line per difference,
    /// empty when they agree.
    fn drift(&self, state: &State, plan_id: i64, resolved: &Resolved) -> Vec<String>;
}

/// Why a sink could not enforce a state.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing, syncing or renaming an output file failed; the old file is intact.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused to be read or changed; the transaction was not applied.
    #[error("nftables: cannot {what}")]
    Netlink {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Free text from outside (an AMC's name) made safe for a `#` comment line: control
/// characters, line breaks included, become spaces, so the text cannot end the comment.
pub fn comment_text(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
