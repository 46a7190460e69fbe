//! generic intake end to end (being written).
