//! google payloads → envelopes (being written).
