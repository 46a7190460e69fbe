//! Integration tests of the stores and queues, linked into one binary.

mod catchup_contract;
mod errors;
mod postgres;
mod pubsub;
mod queue_contract;
mod sqlite;
mod sqs;
mod state_contract;
