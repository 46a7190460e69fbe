//! Looker API 4.0 client (being written).
