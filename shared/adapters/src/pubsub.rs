//! Google Pub/Sub queue backend (being written).
