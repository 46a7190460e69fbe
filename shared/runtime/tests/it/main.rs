//! Integration tests of the runtime, linked into one binary.

mod contract;
mod own_identity;
mod real_targets;
mod registered;
mod toy_target;
mod toy_target_contract;
mod wake;
