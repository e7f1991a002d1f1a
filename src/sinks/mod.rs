//! What enforces a state. The renderers (`squid`, `plain`, `nft_script`) are pure functions of
//! the state; [`files::FileSink`] writes what they render, atomically, and runs each export's
//! [`post_write::PostWrite`] command.
//!
//! Every sink only ever sees validated [`crate::host::Host`] values: nothing from outside
//! reaches a file without passing host validation.

pub mod files;
pub mod haproxy;
pub mod json;
#[cfg(feature = "netlink")]
pub mod netlink;
/// Without the `netlink` feature: the same calls, each an error naming the feature. The
/// configuration refuses `[nftables] enabled = true` on such a build, so they are not reached.
#[cfg(not(feature = "netlink"))]
pub mod netlink {
    use crate::resolve::Millis;
    use crate::sinks::nftables::{Kernel, Layout, Steps};

    fn unavailable() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::Unsupported, crate::sinks::nftables::NO_NETLINK)
    }

    pub fn snapshot(_layout: &Layout) -> std::io::Result<Kernel> {
        Err(unavailable())
    }

    pub fn commit(_layout: &Layout, _steps: &Steps, _now: Millis) -> std::io::Result<()> {
        Err(unavailable())
    }

    pub fn with_kernel<T>(_layout: &Layout, _read_back: bool, _f: impl FnOnce(&Kernel) -> T) -> std::io::Result<T> {
        Err(unavailable())
    }

    pub fn commit_known(_layout: &Layout, _steps: &Steps, _now: Millis) -> std::io::Result<()> {
        Err(unavailable())
    }
}
pub mod nft_script;
pub mod nftables;
pub mod plain;
pub mod post_write;
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
