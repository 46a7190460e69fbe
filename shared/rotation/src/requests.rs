//! Where rotation requests come from (issue 12, item 4): the rotation queue. The processor
//! publishes each request as an envelope; the rotator receives it, records it in its own inbox
//! ([`crate::RotationStore::record_request`], deduplicated by envelope id) and only then acks it,
//! so a request is never lost between the two services and they share no table. A body that is
//! not a rotation-request envelope is poison: dead-lettered at once with the reason.

use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::{BackendError, Delivery, QueueConsumer, RotationRequest};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// The consumer side of the rotation queue, object-safe, so the rotator does not carry the
/// backend in its type (embedded SQLite queue, SQS, Pub/Sub: any [`QueueConsumer`]).
pub trait RequestQueue: Send + Sync {
    fn receive(&self, max: usize, visibility: Duration) -> Fut<'_, Vec<Delivery>>;
    fn ack<'a>(&'a self, delivery: &'a Delivery) -> Fut<'a, ()>;
    fn release<'a>(&'a self, delivery: &'a Delivery, delay: Duration) -> Fut<'a, ()>;
    fn dead_letter<'a>(&'a self, delivery: &'a Delivery, reason: &'a str) -> Fut<'a, ()>;
}

impl<Q: QueueConsumer> RequestQueue for Q {
    fn receive(&self, max: usize, visibility: Duration) -> Fut<'_, Vec<Delivery>> {
        Box::pin(QueueConsumer::receive(self, max, visibility))
    }
    fn ack<'a>(&'a self, delivery: &'a Delivery) -> Fut<'a, ()> {
        Box::pin(QueueConsumer::ack(self, delivery))
    }
    fn release<'a>(&'a self, delivery: &'a Delivery, delay: Duration) -> Fut<'a, ()> {
        Box::pin(QueueConsumer::release(self, delivery, delay))
    }
    fn dead_letter<'a>(&'a self, delivery: &'a Delivery, reason: &'a str) -> Fut<'a, ()> {
        Box::pin(QueueConsumer::dead_letter(self, delivery, reason))
    }
}

/// The request a delivery carries, or why it is poison (the dead-letter reason).
pub fn request_of(body: &str) -> Result<RotationRequest, String> {
    let env = Envelope::from_json(body).map_err(|e| format!("not an envelope: {e}"))?;
    RotationRequest::from_envelope(&env).ok_or_else(|| {
        format!(
            "not a rotation request: envelope {} carries a {} event",
            env.id,
            env.event.kind()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_a_rotation_request_is_poison_with_its_reason() {
        assert!(request_of("{").unwrap_err().starts_with("not an envelope: "));
        let env = serde_json::json!({
            "version": 1, "id": "okta:1", "source": "okta",
            "subject": {"key": "okta:00u1", "email": null, "display_name": null},
            "occurred_at": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z",
            "event": {"type": "user_activated"}, "source_event_type": "x", "raw": null
        });
        let reason = request_of(&env.to_string()).unwrap_err();
        assert_eq!(
            reason,
            "not a rotation request: envelope okta:1 carries a user_activated event"
        );
        let mut env = env;
        env["event"] = serde_json::json!({"type": "rotation_requested", "provider": "aws",
            "reason": "r", "secret": "s"});
        let req = request_of(&env.to_string()).unwrap();
        assert_eq!(
            (req.envelope_id.as_str(), req.secret.as_deref()),
            ("okta:1", Some("s"))
        );
    }
}
