//! SCIM directory and outbox on SQLite (being written).
