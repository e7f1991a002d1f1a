//! What an installation met: the stories of the network engineer, the RSSI and the helpdesk
//! played against the binary, the units and the real tools. One module per part:
//!
//! - `nft`: the nft script beside an administrator's chains, and the proxy host's output hook.
//!
//! `cargo test --features netlink --test installation` runs them all.

#[path = "../util/mod.rs"]
mod util;

mod mail;
mod nft;
mod ops;
