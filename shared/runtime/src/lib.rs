//! The parts every Gatehouse binary is assembled from: the ingress router ([`ingress`]), the
//! processor ([`engine`] decides and applies, [`worker`] drives it from the queue) and the wiring
//! from configuration ([`app`]).

pub mod app;
pub mod audit;
pub mod breaker;
pub mod budget;
pub mod cloud;
pub mod engine;
pub mod ingress;
pub mod reconcile;
pub mod reconcile_budget;
pub mod reconcile_leader;
pub mod reconcile_paged;
pub mod safety;
pub mod server;
pub mod targets;
pub mod worker;
