//! Integration tests of the adapters, linked into one binary.

mod looker;
mod pubsub;
mod queue_contract;
mod sqlite;
mod sqs;
