//! What enforces a state. The renderers (`squid`, `plain`, `nft_script`) are pure functions of
//! the state; [`files::FileSink`] writes what they render, atomically, and runs each export's
//! [`post_write::PostWrite`] command.
//!
//! Every sink only ever sees validated [`crate::host::Host`] values: nothing from outside
//! reaches a file without passing host validation.

pub mod files;
pub mod haproxy;
pub mod json;
pub mod nft_script;
pub mod nftables;
// The nftables sink's kernel side, where it always was for its callers.
pub use nftables::netlink;
pub mod plain;
pub mod post_write;
pub mod squid;
pub mod stormshield;
pub mod readback;

use std::path::PathBuf;

use crate::catalogue::State;
use crate::resolve::Resolved;


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
    /// An output path cannot take a file (a directory, a special file, a parent that is a file),
    /// or writing, syncing or keeping aside a file failed: found before any output was replaced,
    /// so every output file is as it was.
    #[error("cannot write {}; no output file was changed", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Renaming a new output file over its target failed after others were replaced; `outcome`
    /// says whether those were put back (then every output is at its old version) or not.
    #[error("cannot replace {}; {outcome}", path.display())]
    Replace {
        path: PathBuf,
        outcome: String,
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
