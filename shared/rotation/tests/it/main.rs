//! Integration tests of the rotator: each kind × store against moto (AWS) and the test-kit fakes
//! (Looker, GCP Secret Manager, GCP IAM keys), crash safety, rollback, triggers, races, and the
//! scheduler under tokio's paused clock; the rotation-store contract on memory, SQLite and
//! PostgreSQL (`store_contract`).

mod aws_iam;
mod gcp;
mod looker_aws;
mod queue;
mod schedule;
mod store_contract;
mod support;
