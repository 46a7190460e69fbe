//! Real I/O behind the domain's ports: the Looker API client, the SQLite state store and the
//! embedded SQLite queue.

pub mod looker;
pub mod sqlite;
