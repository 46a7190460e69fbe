//! The intake contract: one suite ([`contract`]) every [`Intake`] passes — Okta, generic,
//! Google, Graph and the toy of docs/adding-an-intake.md (`toy.rs`) — and the runtime side of
//! "only a verified value can be enqueued".

use super::pipeline::{Intake, Item, Pipeline, Refusal, Request as Verifiable, Sink, Verified};
use axum::Router;
use axum::body::{Body, Bytes, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::BackendError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

/// A sink that records what it was given, or fails every `put`.
pub(crate) struct MemSink<T> {
    pub items: Arc<Mutex<Vec<T>>>,
    pub fail: bool,
}

impl<T: Item + Clone> Sink<T> for MemSink<T> {
    async fn put(&self, batch: &Verified<Vec<T>>, _: DateTime<Utc>) -> Result<u64, BackendError> {
        if self.fail {
            return Err(BackendError::new("disk full", "test"));
        }
        self.items.lock().unwrap().extend(batch.iter().cloned());
        Ok(batch.len() as u64)
    }
}

/// What the contract needs of one intake: fresh requests (a signature covers its body, so each
/// case is built whole).
pub(crate) trait Fixture {
    type I: Intake<Item: Clone>;
    fn intake(&self) -> Self::I;
    /// An authentic, well-formed request, and the keys ([`Item::key`]) of exactly what it yields.
    fn valid(&self) -> (Request<Body>, Vec<String>);
    /// The valid request with its credential missing, and with a wrong one.
    fn unauthenticated(&self) -> Vec<Request<Body>>;
    /// Authentic, but the body is not the source's format.
    fn malformed(&self) -> Request<Body>;
    /// Authentic and well-formed, but a subject email breaks the email rule; `None` when the
    /// items name no email (Graph's notifications).
    fn invalid_email(&self) -> Option<Request<Body>>;
}

async fn send<I: Intake<Item: Clone>>(
    intake: I,
    fail: bool,
    req: Request<Body>,
) -> (StatusCode, serde_json::Value, Vec<String>) {
    let items = Arc::new(Mutex::new(Vec::new()));
    let sink = MemSink {
        items: items.clone(),
        fail,
    };
    // Every path and method: the contract is about the pipeline and the intake, not the route.
    let app = Router::new()
        .fallback(super::pipeline::handle::<I, MemSink<I::Item>>)
        .with_state(Pipeline::new(intake, sink));
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    let keys = items.lock().unwrap().iter().map(Item::key).collect();
    (status, body, keys)
}

/// The contract every intake passes.
pub(crate) async fn contract<F: Fixture>(f: &F) {
    let name = F::I::SOURCE;
    let refused = |want: StatusCode, code: &str, got: (StatusCode, serde_json::Value, Vec<String>)| {
        let (status, body, published) = got;
        assert_eq!(
            (status, body["error"].as_str()),
            (want, Some(code)),
            "{name}: {body}"
        );
        assert!(published.is_empty(), "{name}: {code} published {published:?}");
    };
    for req in f.unauthenticated() {
        refused(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            send(f.intake(), false, req).await,
        );
    }
    let limit = f.intake().max_body_bytes();
    if !F::I::BODY_SIGNED {
        // A credential in a header alone is checked before the body is read: an oversized
        // body without it is 401, not 413 (nothing of it was read).
        for req in f.unauthenticated() {
            let (parts, _) = req.into_parts();
            let over = Request::from_parts(parts, Body::from(vec![b' '; limit + 1]));
            refused(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                send(f.intake(), false, over).await,
            );
        }
    }
    let (parts, _) = f.valid().0.into_parts();
    let over = Request::from_parts(parts, Body::from(vec![b' '; limit + 1]));
    refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        send(f.intake(), false, over).await,
    );
    let (mut parts, body) = f.valid().0.into_parts();
    parts.headers.insert(header::CONTENT_LENGTH, (limit + 1).into());
    let declared = Request::from_parts(parts, body);
    refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        send(f.intake(), false, declared).await,
    );
    refused(
        StatusCode::BAD_REQUEST,
        "bad_request",
        send(f.intake(), false, f.malformed()).await,
    );
    if let Some(req) = f.invalid_email() {
        refused(
            StatusCode::BAD_REQUEST,
            "invalid_email",
            send(f.intake(), false, req).await,
        );
    }
    let (req, expected) = f.valid();
    assert!(!expected.is_empty(), "{name}: the valid request yields something");
    let (status, body, published) = send(f.intake(), false, req).await;
    assert!(status.is_success(), "{name}: {status} {body}");
    assert_eq!(published, expected, "{name}: exactly its items, once");
    let (status, body, _) = send(f.intake(), true, f.valid().0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("enqueue_failed")),
        "{name}"
    );
}

fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Request<Body> {
    let mut r = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::from(body.into())).unwrap()
}

fn keys(envelopes: Vec<Envelope>) -> Vec<String> {
    envelopes.iter().map(Item::key).collect()
}

fn fixed_now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

mod okta {
    use super::*;
    use crate::ingress::okta::OktaIntake;
    use secrecy::SecretString;

    const SECRET: &str = "okta-hook-s3cret-0123456789";
    const BODY: &str = include_str!(
        "../../../../../shared/fixtures/okta/event-hook.user.lifecycle.deactivate.constructed.json"
    );

    struct Okta;
    impl Fixture for Okta {
        type I = OktaIntake;
        fn intake(&self) -> OktaIntake {
            OktaIntake::new(Some(SecretString::from(SECRET)), "example".into(), 8192)
        }
        fn valid(&self) -> (Request<Body>, Vec<String>) {
            let want = gatehouse_domain::okta::parse_hook_body(
                "example",
                BODY.as_bytes(),
                gatehouse_domain::clock::now(),
            )
            .unwrap();
            (
                post("/hooks/okta", &[("authorization", SECRET)], BODY),
                keys(want),
            )
        }
        fn unauthenticated(&self) -> Vec<Request<Body>> {
            vec![
                post("/hooks/okta", &[], BODY),
                post(
                    "/hooks/okta",
                    &[("authorization", "okta-hook-s3cret-0123456780")],
                    BODY,
                ),
            ]
        }
        fn malformed(&self) -> Request<Body> {
            post("/hooks/okta", &[("authorization", SECRET)], "{nope")
        }
        fn invalid_email(&self) -> Option<Request<Body>> {
            let body = BODY.replace("john.doe@example.com", "john doe@example.com");
            Some(post("/hooks/okta", &[("authorization", SECRET)], body))
        }
    }

    #[tokio::test]
    async fn okta_passes_the_intake_contract() {
        contract(&Okta).await;
    }
}

mod generic {
    use super::*;
    use crate::ingress::generic::{Keys, intake, sign};
    use std::time::Duration;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const EVENT: &str = r#"{"type":"user.suspended","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"u1","email":"jo@example.com"}}"#;

    fn signed(secret: &str, body: &str) -> Request<Body> {
        let ts = fixed_now().timestamp().to_string();
        let sig = sign(secret, "msg_1", &ts, body.as_bytes()).unwrap();
        let headers = [
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", ts.as_str()),
            ("webhook-signature", sig.as_str()),
        ];
        post("/hooks/generic", &headers, body.to_string())
    }

    struct Generic;
    impl Fixture for Generic {
        type I = crate::ingress::generic::GenericIntake;
        fn intake(&self) -> Self::I {
            intake(
                Keys::from_secrets([SECRET]),
                Duration::from_secs(300),
                4096,
                Arc::new(fixed_now),
            )
        }
        fn valid(&self) -> (Request<Body>, Vec<String>) {
            (signed(SECRET, EVENT), vec!["generic:msg_1".into()])
        }
        fn unauthenticated(&self) -> Vec<Request<Body>> {
            let (mut unsigned, _) = self.valid();
            unsigned.headers_mut().remove("webhook-signature");
            vec![unsigned, signed("whsec_c2Vjb25kIHNlY3JldCBrZXkgaGVyZSE=", EVENT)]
        }
        fn malformed(&self) -> Request<Body> {
            signed(SECRET, "{nope")
        }
        fn invalid_email(&self) -> Option<Request<Body>> {
            Some(signed(
                SECRET,
                &EVENT.replace("jo@example.com", "jo..x@example.com"),
            ))
        }
    }

    #[tokio::test]
    async fn generic_passes_the_intake_contract() {
        contract(&Generic).await;
    }
}

mod google {
    use super::*;
    use crate::ingress::google::GoogleIntake;
    use secrecy::SecretString;

    const TOKEN: &str = "245t1234tt83trrt333";
    const BODY: &str = include_str!(
        "../../../../../shared/fixtures/google-workspace/reports.push.admin.CREATE_USER.body.docs.json"
    );

    fn notification(token: Option<&str>, body: &str) -> Request<Body> {
        let mut headers = vec![
            ("x-goog-channel-id", "reportsApiId"),
            ("x-goog-resource-state", "CREATE_USER"),
        ];
        headers.extend(token.map(|t| ("x-goog-channel-token", t)));
        post("/hooks/google", &headers, body.to_string())
    }

    struct Google;
    impl Fixture for Google {
        type I = GoogleIntake;
        fn intake(&self) -> GoogleIntake {
            GoogleIntake::new(vec![SecretString::from(TOKEN)], None, 4096, Arc::new(fixed_now))
        }
        fn valid(&self) -> (Request<Body>, Vec<String>) {
            let want = gatehouse_domain::google::parse_activity(BODY.as_bytes(), fixed_now()).unwrap();
            (notification(Some(TOKEN), BODY), keys(want))
        }
        fn unauthenticated(&self) -> Vec<Request<Body>> {
            vec![
                notification(None, BODY),
                notification(Some("245t1234tt83trrt334"), BODY),
            ]
        }
        fn malformed(&self) -> Request<Body> {
            notification(Some(TOKEN), "{not json")
        }
        fn invalid_email(&self) -> Option<Request<Body>> {
            Some(notification(
                Some(TOKEN),
                &BODY.replace("liz@example.com", "liz @example.com"),
            ))
        }
    }

    #[tokio::test]
    async fn google_passes_the_intake_contract() {
        contract(&Google).await;
    }
}

mod graph {
    use super::*;
    use crate::ingress::graph::GraphIntake;
    use secrecy::SecretString;

    const CLIENT_STATE: &str = "c2VjcmV0Q2xpZW50U3RhdGUtdXNlcnM";
    const TENANT: &str = "84bd8158-6d4d-4958-8b9f-9d6445542f95";
    const BODY: &str = include_str!(
        "../../../../../shared/fixtures/entra/graph.notification.users.updated.constructed.json"
    );

    /// The fixture with a subscription that has not expired.
    fn body() -> String {
        BODY.replace("2024-06-20T11:00:00-07:00", "2999-01-01T00:00:00Z")
    }

    struct Graph;
    impl Fixture for Graph {
        type I = GraphIntake;
        fn intake(&self) -> GraphIntake {
            GraphIntake::new(Some(SecretString::from(CLIENT_STATE)), Some(TENANT.into()), 4096)
        }
        fn valid(&self) -> (Request<Body>, Vec<String>) {
            let want = gatehouse_domain::graph::parse_collection(body().as_bytes()).unwrap();
            (
                post("/hooks/graph", &[], body()),
                want.iter().map(Item::key).collect(),
            )
        }
        fn unauthenticated(&self) -> Vec<Request<Body>> {
            vec![
                post(
                    "/hooks/graph",
                    &[],
                    body().replace(&format!(r#""clientState": "{CLIENT_STATE}","#), ""),
                ),
                post("/hooks/graph", &[], body().replace(CLIENT_STATE, "guessed")),
            ]
        }
        fn malformed(&self) -> Request<Body> {
            post("/hooks/graph", &[], r#"{"value": "nope"}"#)
        }
        fn invalid_email(&self) -> Option<Request<Body>> {
            None
        }
    }

    #[tokio::test]
    async fn graph_passes_the_intake_contract() {
        contract(&Graph).await;
    }
}

/// An intake that refuses everything and counts what the pipeline asked of it after `verify`.
struct Refuses {
    normalized: Arc<AtomicUsize>,
}

impl Intake for Refuses {
    const SOURCE: &'static str = "test";
    type Proof = ();
    type Item = Envelope;
    fn not_configured(&self) -> Option<&'static str> {
        None
    }
    fn max_body_bytes(&self) -> usize {
        1024
    }
    async fn verify(&self, _: &HeaderMap, _: &Bytes, _: DateTime<Utc>) -> Result<(), Refusal> {
        Err(Refusal::unauthorized("never"))
    }
    fn normalize(&self, _: &Verified<Verifiable<()>>, _: DateTime<Utc>) -> Result<Vec<Envelope>, Refusal> {
        self.normalized.fetch_add(1, Ordering::SeqCst);
        let events = r#"{"type":"user.suspended","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"u1"}}"#;
        Ok(
            gatehouse_domain::generic::parse_body("m", events.as_bytes(), gatehouse_domain::clock::now())
                .unwrap(),
        )
    }
    fn respond(&self, _: &Verified<Verifiable<()>>, _: &Verified<Vec<Envelope>>, _: u64) -> Response {
        unreachable!("never verified")
    }
}

/// The runtime half of the typestate (the compile-time half is the `compile_fail` doctests in
/// `pipeline`): when `verify` refuses, nothing is normalized and nothing reaches the sink.
#[tokio::test]
async fn nothing_is_normalized_or_enqueued_unless_verify_passed() {
    let normalized = Arc::new(AtomicUsize::new(0));
    let intake = Refuses {
        normalized: normalized.clone(),
    };
    let (status, body, published) = send(intake, false, post("/", &[], "{}")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    assert_eq!(
        normalized.load(Ordering::SeqCst),
        0,
        "normalize ran on an unverified request"
    );
    assert!(published.is_empty());
}
