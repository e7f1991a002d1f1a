//! What enforces a state. The renderers (`squid`, `plain`, `nft_script`) are pure functions of
//! the state; [`files::FileSink`] writes what they render, atomically.
//!
//! Every sink only ever sees validated [`crate::host::Host`] values: nothing from outside
//! reaches a file without passing host validation.

pub mod files;
pub mod haproxy;
pub mod json;
pub mod nft_script;
pub mod plain;
pub mod squid;
pub mod stormshield;

use std::path::PathBuf;

use crate::catalogue::State;
use crate::sinks::nft_script::Addresses;

/// Something that enforces a state.
pub trait Sink {
    /// A short name for logs and messages (`files`, `nftables`).
    fn name(&self) -> &str;
    /// Enforces `state`, produced by plan `plan_id`, with the hosts' resolved `addresses`. On
    /// error, what was in force stays. The warnings say what went wrong after the state was
    /// enforced (a post-write command).
    fn apply(&self, state: &State, plan_id: i64, addresses: &Addresses) -> Result<Vec<String>, SinkError>;
    /// What differs between what this sink enforces and `state`: one line per difference,
    /// empty when they agree.
    fn drift(&self, state: &State, plan_id: i64, addresses: &Addresses) -> Vec<String>;
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
}

/// Free text from outside (an AMC's name) made safe for a `#` comment line: control
/// characters, line breaks included, become spaces, so the text cannot end the comment.
pub fn comment_text(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
