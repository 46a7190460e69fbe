//! End-to-end tests: Okta hook over HTTP → embedded queue → processor → fake Looker → ledger.

mod admin;
mod budget;
mod call_floor;
mod cloud;
mod concurrency;
mod fixtures;
mod gcp_groups;
mod generic;
mod google;
mod google_catchup;
mod graph;
mod graph_trust;
mod handover;
mod http_limits;
mod identity_links;
mod ingress;
mod lifecycle;
mod okta_catchup;
mod replicas;
mod resilience;
mod safety;
mod scim;
mod scim_names;
mod trust;
mod trust_events;
