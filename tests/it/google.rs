//! google intake end to end (being written).
