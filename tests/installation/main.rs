//! What an installation met: the stories of the network engineer, the RSSI and the helpdesk
//! played against the binary, the units and the real tools. One module per part:
//!
//! - `mail`: what the RSSI and the helpdesk read (French mails, closings, superseded plans, back
//!   to normal, notification-only hosts alerted, extra_hosts in hybrid mode), caught by a real
//!   SMTP receiver;
//! - `nft`: the nft script beside an administrator's chains, and the proxy host's output hook;
//! - `ops`: a store left by root, a broken configuration file, the identity check, watcher
//!   errors, journal priorities and STATUS, reloads;
//! - `units`: the shipped units and package against the real file system (read-only Maildir,
//!   groups for the logs, nftables from the timer, root reload units with a real Squid, export
//!   modes, the man page).
//!
//! `cargo test --features netlink --test installation` runs them all.

#[path = "../util/mod.rs"]
mod util;

mod mail;
mod nft;
mod ops;
mod units;
