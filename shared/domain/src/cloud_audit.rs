//! Cloud audit events (CloudTrail via EventBridge, GCP audit logs via Pub/Sub) → envelopes (being written).
