//! graph payloads → envelopes (being written).
