//! Integration tests of the rotator: each kind × store against moto (AWS) and the test-kit fakes
//! (Looker, GCP Secret Manager, GCP IAM keys), crash safety, rollback, triggers, races, and the
//! scheduler under tokio's paused clock.

mod aws_iam;
mod gcp;
mod looker_aws;
mod schedule;
mod support;
