//! Pure core of Gatehouse. Nothing in this crate performs I/O: parsing, policy evaluation and
//! planning are functions of their inputs, so they are unit- and property-tested without servers.
//!
//! - [`envelope`]: the one type that travels on every queue.
//! - [`okta`]: Okta Event Hook bodies → envelopes.
//! - [`identity`]: the directory record of one person, folded from events (last writer wins per field).
//! - [`policy`]: policy-as-code and its pure evaluation into a desired Looker state.
//! - [`looker`]: Looker's model as Gatehouse sees it, and the operations a plan is made of.
//! - [`looker_core`]: Looker (Google Cloud core): the IAM login binding, what core forbids.
//! - [`plan`]: the diff from actual to desired state.
//! - [`handover`]: deleting without destroying (hand-over before a deletion, outside deliveries).
//! - [`deprovisioning`]: the deprovisioning SLA report (event → last revoking call per target).
//! - [`inactivity`]: license reclamation (`[inactivity]`: managed users with no recent login).
//! - [`ledger_chain`]: the hash chain over the ledger and its verification.
//! - [`clock`]: the one wall clock ([`clock::now`], or an injected [`clock::Clock`]).
//! - [`ports`]: traits the adapters implement (queue, state, Looker).
//! - [`schedule`]: one leader per scheduled reconcile tick, the rolling audit's run counter.
//! - [`target`]: the one port every changed system implements (read, diff, send, classify).

pub mod access;
pub mod actor;
pub mod breaker;
pub mod clock;
pub mod cloud;
pub mod cloud_audit;
pub mod deprovisioning;
pub mod email;
pub mod envelope;
pub mod error;
#[cfg(test)]
mod fuzz;
pub mod gcp;
pub mod generic;
pub mod google;
pub mod graph;
pub mod handover;
pub mod identity;
pub mod identity_center;
pub mod inactivity;
pub mod ledger_chain;
pub mod link;
pub mod looker;
pub mod looker_core;
pub mod metric_labels;
pub mod okta;
pub mod okta_log;
pub mod plan;
pub mod policy;
pub mod policy_review;
pub mod ports;
pub mod rules;
pub mod schedule;
pub mod scim_filter;
pub mod sso;
pub mod target;
pub mod vec_map;
