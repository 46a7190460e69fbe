//! The worked example of docs/adding-an-intake.md: a made-up source that POSTs canonical
//! events (the generic intake's JSON) signed with HMAC-SHA256 over the body, in
//! `X-Toy-Signature: sha256=<hex>` (the shape GitHub's webhooks use). Test-only; it passes the
//! same contract suite as Okta, generic, Google and Graph.

use super::generic::hmac_sha256;
use super::pipeline::{self, Refusal, Request, Verified};
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::Envelope;
use subtle::ConstantTimeEq;

pub struct ToyIntake {
    key: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header a sender holding `key` sends with `body`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(key, body)))
}

impl pipeline::Intake for ToyIntake {
    const SOURCE: &'static str = "toy";
    /// The delivery id: the first 16 bytes of the body's MAC, so a redelivery has the same
    /// envelope ids.
    type Proof = String;
    type Item = Envelope;

    fn not_configured(&self) -> Option<&'static str> {
        self.key.is_empty().then_some("no toy key is configured")
    }
    fn max_body_bytes(&self) -> usize {
        4096
    }
    async fn verify(&self, headers: &HeaderMap, body: &Bytes, _: DateTime<Utc>) -> Result<String, Refusal> {
        let given = headers
            .get("x-toy-signature")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let expected = sign(&self.key, body);
        if bool::from(given.ct_eq(expected.as_bytes())) {
            Ok(expected["sha256=".len()..][..32].to_string())
        } else {
            Err(Refusal::unauthorized("missing or wrong X-Toy-Signature header"))
        }
    }
    fn normalize(
        &self,
        request: &Verified<Request<String>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Envelope>, Refusal> {
        gatehouse_domain::generic::parse_body(request.proof(), request.body(), now)
            .map_err(|e| Refusal::malformed(e.to_string()))
    }
    fn respond(&self, _: &Verified<Request<String>>, batch: &Verified<Vec<Envelope>>, _: u64) -> Response {
        axum::Json(serde_json::json!({ "enqueued": batch.len() })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::pipeline_tests::{Fixture, contract};
    use axum::body::Body;

    const KEY: &[u8] = b"toy-key-0123456789";
    const EVENT: &str = r#"{"type":"user.suspended","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"u1","email":"jo@example.com"}}"#;

    fn signed(key: &[u8], body: &str) -> axum::http::Request<Body> {
        let sig = sign(key, body.as_bytes());
        axum::http::Request::post("/hooks/toy")
            .header("x-toy-signature", sig)
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    struct Toy;
    impl Fixture for Toy {
        type I = ToyIntake;
        fn intake(&self) -> ToyIntake {
            ToyIntake { key: KEY.to_vec() }
        }
        fn valid(&self) -> (axum::http::Request<Body>, Vec<String>) {
            let id = &sign(KEY, EVENT.as_bytes())[7..39];
            (signed(KEY, EVENT), vec![format!("generic:{id}")])
        }
        fn unauthenticated(&self) -> Vec<axum::http::Request<Body>> {
            let mut unsigned = signed(KEY, EVENT);
            unsigned.headers_mut().remove("x-toy-signature");
            vec![unsigned, signed(b"another key", EVENT)]
        }
        fn malformed(&self) -> axum::http::Request<Body> {
            signed(KEY, "{nope")
        }
        fn invalid_email(&self) -> Option<axum::http::Request<Body>> {
            Some(signed(KEY, &EVENT.replace("jo@example.com", "jo..x@example.com")))
        }
    }

    #[tokio::test]
    async fn the_toy_passes_the_intake_contract() {
        contract(&Toy).await;
    }
}
