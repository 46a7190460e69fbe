//! Cloud audit translator (being written).
