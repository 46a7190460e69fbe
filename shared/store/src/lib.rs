//! Durable state and queues behind the domain's ports: the SQLite state store and the embedded
//! SQLite queue, the PostgreSQL state store, the SCIM directory and the Graph subscription
//! store, the SQS and Pub/Sub queues and their dead-letter tools.

pub mod catchup_state;
pub mod classify;
pub mod dlq;
pub mod graph_state;
pub mod open;
pub mod postgres;
pub mod pubsub;
pub mod scim_store;
pub mod sqlite;
pub mod sqs;
pub mod state;
