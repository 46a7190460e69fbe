//! Real I/O behind the domain's ports: the Looker API client, the SQLite state store and the
//! embedded SQLite queue, the PostgreSQL state store, the SCIM directory and the Graph
//! subscription store, the SQS and Pub/Sub queues and their dead-letter tools, and the cloud IAM
//! clients (`aws_iam`, `gcp_iam`).

pub mod aws_iam;
pub mod dlq;
pub mod gcp_iam;
pub mod graph_state;
pub mod looker;
pub mod looker_content;
pub mod looker_pages;
pub mod postgres;
pub mod pubsub;
pub mod scim_store;
pub mod sqlite;
pub mod sqs;
pub mod state;
