//! rocsync keeps a hospital's firewall allow-list in sync with the French ROC ecosystem: the
//! Annuaire AMC's list of URLs and the Inter-AMC notifications.
//!
//! # Layout
//!
//! Data flows one way, in the order of these modules; the core (host, catalogue, plan, and the
//! renderers in `sinks`) is pure and the I/O sits at the edges.
//!
//! - [`config`]: the configuration file: its raw schema, the diagnostics (line, column,
//!   suggestions) and the checked [`config::Config`] of typed settings per section.
//! - [`answer`]: an annuaire answer once read (a core type); [`sources`]: where hosts come from —
//!   [`sources::annuaire`] reads the annuaire's JSON and XML answers into an [`answer::Answer`].
//! - [`host`] and [`amc`]: the validated host name and the AMC number, the only forms in which
//!   outside values travel further.
//! - [`catalogue`]: every host with who lists it, then the desired [`catalogue::State`] that the
//!   policy makes of it.
//! - [`plan`]: the diff between what is in force and what is desired, the mass-removal guard
//!   and the review modes.
//! - [`resolve`]: the addresses of the hosts, following DNS TTLs, for the address sinks.
//! - [`store`]: SQLite under `store.state_dir`: what is applied, every plan, every decision,
//!   and an append-only audit log.
//! - [`sinks`]: what enforces a state: files written atomically (Squid, HAProxy, plain list,
//!   nft script, JSON, Stormshield) and rocsync's nftables table through netlink.
//! - [`watch`]: blocked requests in Squid and nftables logs, correlated with the catalogue, and
//!   logs followed across rotation.
//! - [`usage`]: the requests those logs let through or blocked, counted per opening and day, and
//!   the openings report; [`rpn`]: the move to the national reverse proxy (RPN ROC).
//! - [`alerts`]: what rocsync tells the DSI, the helpdesk and the RSSI, in French or English.
//! - [`engine`]: one reconcile pass, load → read → diff → plan → apply, and the plan commands;
//!   it builds the sinks and sources from the configuration's settings.
//! - [`tls`]: the TLS modes shared by the annuaire, IMAP and SMTP clients; [`memory`]: freed pages
//!   handed back between passes.
//! - [`daemon`]: `rocsync run`, the long-running service: the engine's passes on a schedule and
//!   on wake-ups, the log watchers, the alert queue, the HTTP endpoint, systemd's protocol.
//! - [`console`]: the review console that `rocsync run` serves: the RSSI approves plans in a
//!   browser, the helpdesk looks an AMC up; accounts, sessions and roles.
//! - [`text`]: text from outside made safe to show (controls and bidi overrides escaped).
//! - [`clock`]: the one "now" every part reads, which tests move forward.
//! - [`cli`]: the `rocsync` command line on top of it all; [`logging`], its log lines under
//!   systemd (one journal entry per event, with its priority).

// Unsafe code lives in `sinks::netlink` (libnftnl) and in `memory` (glibc's malloc_trim(3)), which
// say so themselves; the other system calls go through rustix's safe wrappers.
#![deny(unsafe_code)]

pub mod accounts;
pub mod alerts;
pub mod amc;
pub mod answer;
pub mod catalogue;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod daemon;
pub mod engine;
pub mod host;
pub mod logging;
pub mod memory;
pub mod plan;
pub mod resolve;
pub mod rpn;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod text;
pub mod tls;
pub mod usage;
pub mod watch;
#[cfg(test)]
mod testing;

/// An error and its causes on one line, `outer: inner: innermost`, for logs and the store.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
