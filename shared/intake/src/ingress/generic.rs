//! Standard Webhooks generic intake at `/hooks/generic`.
//!
//! A request is verified (HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}` with any
//! configured secret, then the timestamp window) before its body is read as canonical events:
//! [`GenericIntake`] runs through [`pipeline`], so only a request [`verify`]
//! accepted can be parsed and enqueued.
//! Envelope ids derive from `webhook-id`, so a replay within the window is harmless downstream.

use super::Deps;
use super::pipeline::{self, Pipeline, Queue, Refusal, Request, Verified};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::generic::{self, WebhookError};
use gatehouse_domain::ports::QueueProducer;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde_json::json;
use sha2::Sha256;
use std::time::Duration;
use subtle::{Choice, ConstantTimeEq};

/// The route.
pub const PATH: &str = "/hooks/generic";
/// `Source::Generic.as_str()`, the `source` label of this intake's metrics.
const SOURCE: &str = "generic";

/// Standard base64, padding optional (senders differ).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Where "now" comes from (injected so tests of the timestamp window do not depend on wall time).
pub type Clock = gatehouse_domain::clock::SharedClock;

/// HMAC keys: the decoded part of each `whsec_...` secret.
pub struct Keys(Vec<SecretSlice<u8>>);

impl Keys {
    /// Decode configured secrets. The config loader has already validated them; one that still
    /// does not decode is left out (and logged without its value).
    pub fn from_secrets<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Keys {
        let mut keys = Vec::new();
        for (index, s) in secrets.into_iter().enumerate() {
            match B64.decode(generic::secret_key_base64(s)) {
                Ok(k) if !k.is_empty() => keys.push(SecretSlice::from(k)),
                _ => tracing::error!(index, "generic.secrets entry is not base64; ignored"),
            }
        }
        Keys(keys)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys([REDACTED; {}])", self.0.len())
    }
}

/// HMAC-SHA256 of `content` under `key` (the `hmac` crate, RFC 2104).
pub fn hmac_sha256(key: &[u8], content: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac accepts keys of any length");
    mac.update(content);
    mac.finalize().into_bytes().into()
}

/// The `webhook-signature` value a sender holding `secret` (`whsec_<base64>`) produces; `None` if
/// the secret is not base64. Used by tests and tools that play the sender.
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> Option<String> {
    let key = B64.decode(generic::secret_key_base64(secret)).ok()?;
    let mac = hmac_sha256(&key, &generic::signed_content(id, timestamp, body));
    Some(format!("v1,{}", STANDARD.encode(mac)))
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// Missing or malformed Standard Webhooks headers (400).
    #[error("{0}")]
    Malformed(WebhookError),
    /// No signature, or none matches any key (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Authentic but outside the timestamp window (401).
    #[error("{0}")]
    OutOfTolerance(WebhookError),
}

/// Verify a Standard Webhooks request: headers, signature (any `v1` entry against any key, each
/// comparison constant-time), then the timestamp window around `now`. `Ok` is the `webhook-id`.
pub fn verify(
    keys: &Keys,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<String, Rejection> {
    // A value that is not visible ASCII reads as "" and then fails its own check below.
    let header = |name: &'static str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let missing = |name| Rejection::Malformed(WebhookError::MissingHeader(name));
    let id = header(generic::HEADER_ID).ok_or_else(|| missing(generic::HEADER_ID))?;
    generic::validate_webhook_id(id).map_err(Rejection::Malformed)?;
    let ts_raw = header(generic::HEADER_TIMESTAMP).ok_or_else(|| missing(generic::HEADER_TIMESTAMP))?;
    let ts = generic::parse_timestamp(ts_raw).map_err(Rejection::Malformed)?;
    let sig_header = header(generic::HEADER_SIGNATURE)
        .ok_or_else(|| Rejection::Unauthorized("missing webhook-signature header".into()))?;
    let candidates =
        generic::v1_signatures(sig_header).map_err(|e| Rejection::Unauthorized(e.to_string()))?;

    let content = generic::signed_content(id, ts_raw, body);
    let expected: Vec<[u8; 32]> = keys
        .0
        .iter()
        .map(|k| hmac_sha256(k.expose_secret(), &content))
        .collect();
    let mut ok = Choice::from(0);
    for candidate in candidates {
        let Ok(given) = B64.decode(candidate) else {
            continue;
        };
        for mac in &expected {
            ok |= given.as_slice().ct_eq(mac.as_slice());
        }
    }
    if !bool::from(ok) {
        return Err(Rejection::Unauthorized(
            "no webhook-signature entry matches a configured secret".into(),
        ));
    }
    generic::check_timestamp(ts, now, tolerance).map_err(Rejection::OutOfTolerance)?;
    Ok(id.to_string())
}

/// The Standard Webhooks intake as a [`pipeline::Intake`]: the proof is the `webhook-id`.
pub struct GenericIntake {
    keys: Keys,
    tolerance: Duration,
    max_body_bytes: usize,
    now: Clock,
}

impl pipeline::Intake for GenericIntake {
    const SOURCE: &'static str = SOURCE;
    type Proof = String;
    type Item = Envelope;

    fn not_configured(&self) -> Option<&'static str> {
        self.keys.is_empty().then_some(
            "no generic webhook secret is configured (generic.secrets or GATEHOUSE_GENERIC_SECRET)",
        )
    }
    fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }
    fn now(&self) -> DateTime<Utc> {
        self.now.now()
    }
    async fn verify(&self, headers: &HeaderMap, body: &Bytes, now: DateTime<Utc>) -> Result<String, Refusal> {
        verify(&self.keys, headers, body, now, self.tolerance).map_err(|r| match r {
            Rejection::Malformed(e) => Refusal::malformed(e.to_string()),
            Rejection::Unauthorized(detail) => Refusal::unauthorized(detail),
            Rejection::OutOfTolerance(e) => Refusal::new(
                StatusCode::UNAUTHORIZED,
                "expired",
                "timestamp_out_of_tolerance",
                e.to_string(),
            ),
        })
    }
    fn normalize(
        &self,
        request: &Verified<Request<String>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Envelope>, Refusal> {
        generic::parse_body(request.proof(), request.body(), now)
            .map_err(|e| Refusal::malformed(e.to_string()))
    }
    fn context(&self, request: &Verified<Request<String>>) -> String {
        format!("webhook_id={}", request.proof())
    }
    fn respond(&self, _: &Verified<Request<String>>, batch: &Verified<Vec<Envelope>>, _: u64) -> Response {
        axum::Json(json!({ "enqueued": batch.len() })).into_response()
    }
}

pub fn router<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Router {
    let cfg = &deps.config.generic;
    build(
        deps.queue.clone(),
        Keys::from_secrets(cfg.secrets.iter().map(|s| s.expose_secret())),
        cfg.tolerance,
        cfg.max_body_bytes,
        gatehouse_domain::clock::system(),
    )
}

fn build<Q: QueueProducer + 'static>(
    queue: Q,
    keys: Keys,
    tolerance: Duration,
    max_body_bytes: usize,
    now: Clock,
) -> Router {
    Pipeline::route(intake(keys, tolerance, max_body_bytes, now), Queue(queue), PATH)
}

/// The intake with explicit parts (tests inject the clock).
pub fn intake(keys: Keys, tolerance: Duration, max_body_bytes: usize, now: Clock) -> GenericIntake {
    GenericIntake {
        keys,
        tolerance,
        max_body_bytes,
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::test_support::{MemQueue, send};
    use axum::body::Body;
    use axum::http::Request;
    use gatehouse_domain::envelope::{IdentityEvent, Source};
    use std::sync::Arc;

    /// The Standard Webhooks specification's published test vector.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: &str = "1614265330";
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const OTHER_SECRET: &str = "whsec_c2Vjb25kIHNlY3JldCBrZXkgaGVyZSE=";
    const NOW: i64 = 1_800_000_000;
    const EVENT: &[u8] =
        br#"{"type":"user.suspended","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"u1","email":"jo@example.com"}}"#;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn spec_headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", SPEC_ID.parse().unwrap());
        h.insert("webhook-timestamp", SPEC_TS.parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 1, 2 and 6 (a key longer than the block size).
        assert_eq!(
            hmac_sha256(&[0x0b; 20], b"Hi There").to_vec(),
            hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?").to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )
            .to_vec(),
            hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    #[test]
    fn signs_and_verifies_the_standard_webhooks_test_vector() {
        assert_eq!(
            sign(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_BODY).as_deref(),
            Some(SPEC_SIG)
        );
        assert_eq!(sign("whsec_%%", SPEC_ID, SPEC_TS, SPEC_BODY), None);
        let keys = Keys::from_secrets([SPEC_SECRET]);
        let tol = Duration::from_secs(300);
        let v = verify(&keys, &spec_headers(SPEC_SIG), SPEC_BODY, at(1614265330), tol).unwrap();
        assert_eq!(v, SPEC_ID);
        // a bare base64 secret (no whsec_ prefix) is the same key
        let bare = Keys::from_secrets(["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        assert!(verify(&bare, &spec_headers(SPEC_SIG), SPEC_BODY, at(1614265330), tol).is_ok());
    }

    #[test]
    fn any_entry_against_any_key_verifies_and_everything_else_does_not() {
        let tol = Duration::from_secs(300);
        let now = at(1614265330);
        let body = || SPEC_BODY;
        let rotated = Keys::from_secrets([OTHER_SECRET, SPEC_SECRET]);
        let several = format!("v1a,AAAA v1,{} {SPEC_SIG}", STANDARD.encode([0u8; 32]));
        assert!(verify(&rotated, &spec_headers(&several), body(), now, tol).is_ok());
        assert!(verify(&rotated, &spec_headers(SPEC_SIG), body(), now, tol).is_ok());

        let only_other = Keys::from_secrets([OTHER_SECRET]);
        let forged = [
            (&only_other, SPEC_SIG.to_string()),
            (
                &rotated,
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OF=".to_string(),
            ),
            (&rotated, "v1,not-base64!!".to_string()),
            (&rotated, "v1,".to_string()),
            (
                &rotated,
                "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_string(),
            ),
            (
                &rotated,
                "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_string(),
            ),
        ];
        for (keys, sig) in forged {
            let e = verify(keys, &spec_headers(&sig), body(), now, tol).unwrap_err();
            assert!(matches!(e, Rejection::Unauthorized(_)), "{sig}: {e:?}");
        }
        // the body, id and timestamp are all covered by the signature
        let e = verify(
            &rotated,
            &spec_headers(SPEC_SIG),
            b"{\"test\": 2432232315}",
            now,
            tol,
        );
        assert!(matches!(e, Err(Rejection::Unauthorized(_))));
        let mut h = spec_headers(SPEC_SIG);
        h.insert("webhook-id", "msg_other".parse().unwrap());
        assert!(matches!(
            verify(&rotated, &h, body(), now, tol),
            Err(Rejection::Unauthorized(_))
        ));
        let mut h = spec_headers(SPEC_SIG);
        h.insert("webhook-timestamp", "1614265331".parse().unwrap());
        assert!(matches!(
            verify(&rotated, &h, body(), now, tol),
            Err(Rejection::Unauthorized(_))
        ));
    }

    #[test]
    fn the_window_is_checked_after_the_signature_both_ways() {
        let keys = Keys::from_secrets([SPEC_SECRET]);
        let tol = Duration::from_secs(300);
        let body = || SPEC_BODY;
        let ts = 1614265330;
        assert!(verify(&keys, &spec_headers(SPEC_SIG), body(), at(ts + 300), tol).is_ok());
        assert!(verify(&keys, &spec_headers(SPEC_SIG), body(), at(ts - 300), tol).is_ok());
        let e = verify(&keys, &spec_headers(SPEC_SIG), body(), at(ts + 301), tol).unwrap_err();
        assert_eq!(
            e,
            Rejection::OutOfTolerance(WebhookError::TooOld {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        let e = verify(&keys, &spec_headers(SPEC_SIG), body(), at(ts - 3600), tol).unwrap_err();
        assert!(matches!(
            e,
            Rejection::OutOfTolerance(WebhookError::TooNew { .. })
        ));
        // a forged request learns nothing about the window
        let forged = spec_headers("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert!(matches!(
            verify(&keys, &forged, body(), at(ts + 9999), tol),
            Err(Rejection::Unauthorized(_))
        ));
    }

    #[test]
    fn keys_never_reach_debug_output() {
        let keys = Keys::from_secrets([SPEC_SECRET]);
        let dbg = format!("{keys:?}");
        assert!(!dbg.contains("MfKQ") && !dbg.contains("49"), "{dbg}");
    }

    // --- HTTP, through Router::oneshot ---

    fn app(queue: MemQueue, secrets: &[&str]) -> Router {
        build(
            queue,
            Keys::from_secrets(secrets.iter().copied()),
            Duration::from_secs(300),
            4096,
            Arc::new(|| at(NOW)),
        )
    }

    fn request(secret: Option<&str>, id: Option<&str>, ts: Option<i64>, body: &[u8]) -> Request<Body> {
        let mut r = Request::post(PATH).header("content-type", "application/json");
        if let Some(id) = id {
            r = r.header("webhook-id", id);
        }
        if let Some(ts) = ts {
            r = r.header("webhook-timestamp", ts.to_string());
        }
        if let Some(secret) = secret {
            let sig = sign(
                secret,
                id.unwrap_or(""),
                &ts.map(|t| t.to_string()).unwrap_or_default(),
                body,
            )
            .unwrap();
            r = r.header("webhook-signature", sig);
        }
        r.body(Body::from(body.to_vec())).unwrap()
    }

    /// The intake request's span is exported with its source and count, and the envelope it
    /// enqueued carries that span's traceparent (the processor's span becomes its child).
    #[tokio::test]
    async fn the_request_span_is_exported_and_its_trace_rides_on_the_envelope() {
        use tracing_subscriber::layer::SubscriberExt;
        let collector = gatehouse_testkit::FakeCollector::start().await;
        let cfg = gatehouse_platform::config::TelemetryConfig {
            otlp_endpoint: Some(collector.base_url()),
            ..Default::default()
        };
        let telemetry = gatehouse_platform::telemetry::Telemetry::new(&cfg, "test").unwrap();
        assert!(telemetry.is_exporting());
        let q = MemQueue::default();
        {
            // A current-thread runtime: the subscriber set here sees the whole request.
            let _g = tracing::subscriber::set_default(tracing_subscriber::registry().with(telemetry.layer()));
            let app =
                app(q.clone(), &[SPEC_SECRET]).layer(axum::middleware::from_fn(super::super::trace_request));
            let (status, body) = send(
                app,
                request(Some(SPEC_SECRET), Some("msg_1"), Some(NOW - 10), EVENT),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        telemetry.shutdown().await;
        let spans = collector.spans();
        assert_eq!(spans.len(), 1, "{spans:#?}");
        let s = &spans[0];
        assert_eq!(s.name, "POST /hooks/generic");
        assert_eq!(
            (s.attr("source"), s.attr("accepted"), s.kind.as_str()),
            (Some("generic"), Some("1"), "server")
        );
        assert_eq!(s.resource.get("service.name").map(String::as_str), Some("test"));
        let published = q.published.lock().unwrap();
        assert_eq!(
            published[0].trace_parent.as_deref(),
            Some(format!("00-{}-{}-01", s.trace_id, s.span_id).as_str())
        );
    }

    #[tokio::test]
    async fn without_traces_the_envelope_carries_no_trace() {
        let q = MemQueue::default();
        let app =
            app(q.clone(), &[SPEC_SECRET]).layer(axum::middleware::from_fn(super::super::trace_request));
        let (status, _) = send(
            app,
            request(Some(SPEC_SECRET), Some("msg_1"), Some(NOW - 10), EVENT),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let published = q.published.lock().unwrap();
        assert_eq!(published[0].trace_parent, None);
        assert!(
            !published[0].to_json().contains("trace_parent"),
            "the wire form is unchanged"
        );
    }

    #[tokio::test]
    async fn a_signed_event_is_enqueued() {
        let q = MemQueue::default();
        let (status, body) = send(
            app(q.clone(), &[OTHER_SECRET, SPEC_SECRET]),
            request(Some(SPEC_SECRET), Some("msg_1"), Some(NOW - 10), EVENT),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body, json!({"enqueued": 1}));
        let published = q.published.lock().unwrap();
        assert_eq!(published[0].id.0, "generic:msg_1");
        assert_eq!(published[0].source, Source::Generic);
        assert_eq!(published[0].event, IdentityEvent::UserSuspended);
        assert_eq!(published[0].received_at, at(NOW));
    }

    #[tokio::test]
    async fn every_rejection_has_its_status_and_enqueues_nothing() {
        let q = MemQueue::default();
        let s = Some(SPEC_SECRET);
        let id = Some("msg_1");
        let fresh = Some(NOW);
        let mut unsigned = request(None, id, fresh, EVENT);
        unsigned
            .headers_mut()
            .insert("webhook-signature", "v1,AAAA".parse().unwrap());
        let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
            (
                request(Some(OTHER_SECRET), id, fresh, EVENT),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (unsigned, StatusCode::UNAUTHORIZED, "unauthorized"),
            (
                request(None, id, fresh, EVENT),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                request(s, None, fresh, EVENT),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request(s, id, None, EVENT),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request(s, Some("a b"), fresh, EVENT),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request(s, id, Some(NOW - 301), EVENT),
                StatusCode::UNAUTHORIZED,
                "timestamp_out_of_tolerance",
            ),
            (
                request(s, id, Some(NOW + 301), EVENT),
                StatusCode::UNAUTHORIZED,
                "timestamp_out_of_tolerance",
            ),
            (
                request(s, id, fresh, &[b' '; 5000]),
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            ),
            (
                request(s, id, fresh, b"{nope"),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
            (
                request(s, id, fresh, br#"{"type":"user.nuked"}"#),
                StatusCode::BAD_REQUEST,
                "bad_request",
            ),
        ];
        for (req, want, code) in cases {
            let (status, body) = send(app(q.clone(), &[SPEC_SECRET]), req).await;
            assert_eq!((status, body["error"].as_str()), (want, Some(code)), "{body}");
            assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
            assert!(!body.to_string().contains("MfKQ"), "the secret is never echoed");
        }
        assert!(q.published.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn expired_detail_names_the_age_and_tolerance() {
        let (_, body) = send(
            app(MemQueue::default(), &[SPEC_SECRET]),
            request(Some(SPEC_SECRET), Some("m"), Some(NOW - 600), EVENT),
        )
        .await;
        assert_eq!(
            body["detail"],
            "webhook-timestamp is 600 s in the past; the tolerance is 300 s"
        );
    }

    #[tokio::test]
    async fn unconfigured_is_503_and_a_failed_enqueue_is_503() {
        let req = || request(Some(SPEC_SECRET), Some("m"), Some(NOW), EVENT);
        let (status, body) = send(app(MemQueue::default(), &[]), req()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("not_configured"))
        );
        let failing = MemQueue {
            fail: true,
            ..Default::default()
        };
        let (status, body) = send(app(failing, &[SPEC_SECRET]), req()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("enqueue_failed"))
        );
    }

    #[test]
    fn metrics_label_is_the_source_name() {
        assert_eq!(SOURCE, Source::Generic.as_str());
    }
}

/// Property-based fuzzing of the whole Standard Webhooks request as the intake reads it: headers
/// (present or not, any text, several signatures), the signature check and then the body, signed
/// or forged (`make test`: a few hundred cases; `make fuzz`: `PROPTEST_CASES`).
#[cfg(test)]
mod fuzz {
    use super::*;
    use gatehouse_testkit::fuzz::{self as fz, config};
    use proptest::prelude::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_800_000_000;

    fn canonical() -> Vec<serde_json::Value> {
        vec![
            json!({"type": "user.deactivated", "occurred_at": "2026-01-01T00:00:00Z",
                "user": {"id": "u1", "email": "jo@example.com", "attributes": {"team": "a"}}}),
            json!({"events": [{"type": "group.member_added", "occurred_at": "2026-01-01T00:00:00Z",
                "user": {"id": "u1"}, "group": {"id": "g1", "name": "Admins"}}]}),
        ]
    }

    fn header_text() -> impl Strategy<Value = String> {
        prop_oneof![
            fz::nasty_string(),
            "msg_[A-Za-z0-9]{1,30}",
            (NOW - 600..NOW + 600).prop_map(|t| t.to_string()),
            "v1,[A-Za-z0-9+/]{43}=",
        ]
    }

    proptest! {
        #![proptest_config(config(128))]

        #[test]
        fn standard_webhooks_requests(
            id in prop::option::of(header_text()),
            ts in prop::option::of(header_text()),
            signature in prop::option::of(prop::collection::vec(header_text(), 0..4).prop_map(|v| v.join(" "))),
            sign_it in any::<bool>(),
            body in fz::body(canonical()),
        ) {
            let keys = Keys::from_secrets([SECRET]);
            let mut headers = HeaderMap::new();
            let mut signature = signature;
            if sign_it && let (Some(id), Some(ts)) = (&id, &ts) {
                signature = sign(SECRET, id, ts, &body);
            }
            for (name, value) in [
                (generic::HEADER_ID, &id),
                (generic::HEADER_TIMESTAMP, &ts),
                (generic::HEADER_SIGNATURE, &signature),
            ] {
                // Header values a client can send at all (no CR, LF or NUL).
                if let Some(v) = value.as_deref().and_then(|v| axum::http::HeaderValue::from_str(v).ok()) {
                    headers.insert(name, v);
                }
            }
            let at = DateTime::from_timestamp(NOW, 0).unwrap();
            match verify(&keys, &headers, &body, at, Duration::from_secs(300)) {
                Ok(webhook_id) => {
                    prop_assert!(sign_it, "an unsigned request was verified");
                    let _ = generic::parse_body(&webhook_id, &body, at);
                }
                Err(Rejection::Unauthorized(_)) => prop_assert!(!sign_it || id.is_none() || ts.is_none()
                    || headers.get(generic::HEADER_SIGNATURE).is_none()),
                Err(_) => {}
            }
        }
    }
}
