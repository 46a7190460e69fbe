//! End-to-end tests: Okta hook over HTTP → embedded queue → processor → fake Looker → ledger.

mod fixtures;
mod ingress;
mod lifecycle;
mod resilience;
