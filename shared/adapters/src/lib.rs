//! Real I/O behind the domain's ports: the Looker API client, the SQLite state store and the
//! embedded SQLite queue, the SCIM directory and the Graph subscription store, and the cloud IAM
//! clients (`aws_iam`, `gcp_iam`).

pub mod aws_iam;
pub mod gcp_iam;
pub mod graph_state;
pub mod looker;
pub mod pubsub;
pub mod scim_store;
pub mod sqlite;
pub mod sqs;
