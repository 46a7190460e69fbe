//! Integration tests of the adapters, linked into one binary.

mod aws_iam;
mod aws_iam_sweep;
mod gcp_iam;
mod looker;
mod looker_content;
mod postgres;
mod pubsub;
mod queue_contract;
mod sqlite;
mod sqs;
mod state_contract;
