//! Integration tests of the adapters, linked into one binary.

mod looker;
mod sqlite;
