//! graph intake end to end (being written).
