//! The hostile-input suite: every promise README makes, tried as an attacker and as a careless
//! operator would. One module per edge:
//!
//! - `values`: hostile values in every field of an annuaire answer and in DNS answers;
//! - `mail`: forged and oversized notifications;
//! - `files`: planted links and failing renames around the outputs;
//! - `state`: a lost database, two passes at once, a full disk, permissions;
//! - `config`: configurations that would flood, overflow, leak a secret or exhaust descriptors.
//!
//! `cargo test --test hostile` runs them all.

#[path = "../util/mod.rs"]
mod util;

mod config;
mod files;
mod mail;
mod state;
mod values;
