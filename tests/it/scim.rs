//! scim intake end to end (being written).
