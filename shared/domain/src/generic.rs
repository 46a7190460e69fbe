//! generic payloads → envelopes (being written).
