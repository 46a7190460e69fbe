//! Durable state and queues behind the domain's ports: the SQLite state store and the embedded
//! SQLite queue, the PostgreSQL state store, the SCIM directory and the Graph subscription
//! store, the SQS and Pub/Sub queues and their dead-letter tools. PostgreSQL, SQS and Pub/Sub
//! are cargo features of the same names ([`backends`]); SQLite is always built.

pub mod backends;
pub mod catchup_state;
#[cfg(any(feature = "sqs", feature = "pubsub"))]
pub mod classify;
pub mod dlq;
pub mod graph_state;
mod group_commit;
pub mod open;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "pubsub")]
pub mod pubsub;
/// The SCIM directory and outbox, part of the SQLite store (its writes are group-committed).
pub use sqlite::scim as scim_store;
pub mod sqlite;
#[cfg(feature = "sqs")]
pub mod sqs;
pub mod state;
