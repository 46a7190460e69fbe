//! Integration tests of the processor, linked into one binary.

// The engine's per-event future nests deeper than rustc's default query depth (128).
#![recursion_limit = "256"]

mod identity_center;
mod queue_errors;
mod reconcile_paged;
mod registered;
mod sweep;
mod wake;
// The worked example of a new target, shared with the target contract tests of `gatehouse-targets`.
#[path = "../../../targets/tests/it/toy_target.rs"]
mod toy_target;
