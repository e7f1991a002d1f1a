//! Helpers shared by the unit tests.

use crate::catalogue::{Catalogue, Policy, State, desired};
use crate::plan::{Context, Guard, Mode};
use crate::sources::annuaire;

/// The desired state of the annuaire fixture `name` under `policy`.
pub fn fixture_state(name: &str, policy: &Policy) -> State {
    let path = format!("{}/tests/fixtures/annuaire/{name}", env!("CARGO_MANIFEST_DIR"));
    let answer = annuaire::parse(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")), None).unwrap();
    desired(&Catalogue::from_answer(&answer), policy)
}

/// The same, under the default policy.
pub fn state(name: &str) -> State {
    fixture_state(name, &Policy::default())
}

/// A planning context in `mode` with the default guard.
pub fn ctx(mode: Mode) -> Context {
    Context { mode, guard: Guard::default(), rejected_values: 0, stale_serial: None }
}
