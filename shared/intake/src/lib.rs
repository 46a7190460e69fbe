//! Everything that takes events in and only publishes them: the HTTP intakes ([`ingress`]), the
//! cloud-audit translator ([`audit`]), the bounded HTTP server ([`server`]) and the ingress
//! process's wiring ([`service`]). It links no engine, no target client and no IAM SDK (checked
//! by the `separations` test of `gatehouse-tests`).

pub mod audit;
pub mod ingress;
pub mod server;
pub mod service;
