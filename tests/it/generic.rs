//! Standard Webhooks generic intake end to end: signed canonical events on `/hooks/generic` →
//! queue → processor → fake Looker.

use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::ports::StateStore;
use gatehouse_e2e::{Options, TestApp, spawn_app};
use gatehouse_intake::ingress::generic::sign;
use gatehouse_testkit::FakeLooker;
use serde_json::{Value, json};

/// The Standard Webhooks specification's example secret, and a second one (rotation).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_c2Vjb25kIHNlY3JldCBrZXkgaGVyZSwgcm90YXRlZCE=";
/// Configured nowhere.
const FORGER_SECRET: &str = "whsec_Zm9yZ2VkIGJ5IHNvbWVvbmUgZWxzZSBlbnRpcmVseQ==";

fn unix_now() -> i64 {
    gatehouse_domain::clock::now().timestamp()
}

async fn start(fake: Option<FakeLooker>) -> TestApp {
    spawn_app(Options {
        looker: fake,
        extra_toml: format!(
            "[generic]\nsecrets = [{SECRET:?}, {NEW_SECRET:?}]\ntolerance = \"5m\"\nmax_body_bytes = 65536\n"
        ),
        ..Default::default()
    })
    .await
}

/// A request as a Standard Webhooks sender makes it; `None` leaves a header out.
struct Delivery {
    id: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
}

impl Delivery {
    fn signed(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Delivery {
        let ts = timestamp.to_string();
        Delivery {
            id: Some(id.into()),
            signature: Some(sign(secret, id, &ts, body).unwrap()),
            timestamp: Some(ts),
            body: body.to_vec(),
        }
    }

    async fn post(&self, app: &TestApp) -> (u16, Value) {
        let mut req = app
            .http
            .post(format!("{}/hooks/generic", app.base))
            .header("content-type", "application/json")
            .body(self.body.clone());
        for (name, value) in [
            ("webhook-id", &self.id),
            ("webhook-timestamp", &self.timestamp),
            ("webhook-signature", &self.signature),
        ] {
            if let Some(v) = value {
                req = req.header(name, v.as_str());
            }
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

fn event(kind: &str, email: &str) -> Vec<u8> {
    event_at(kind, email, "2026-03-01T09:30:00Z")
}

fn event_at(kind: &str, email: &str, occurred_at: &str) -> Vec<u8> {
    json!({
        "type": kind,
        "occurred_at": occurred_at,
        "user": {"id": "auth0|6543", "email": email, "first_name": "Jo", "last_name": "Doe"}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn signed_deactivate_offboards_and_a_replay_costs_nothing() {
    let fake = FakeLooker::start().await;
    let uid = fake.add_user("jo.doe@example.com", "Jo", "Doe");
    for _ in 0..2 {
        fake.add_session(&uid);
        fake.add_api3_key(&uid);
    }
    let app = start(Some(fake.clone())).await;

    let d = Delivery::signed(
        SECRET,
        "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        unix_now(),
        &event("user.deactivated", "jo.doe@example.com"),
    );
    let (status, answer) = d.post(&app).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"enqueued": 1}));
    app.drained().await;

    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled);
    assert!(u.session_ids.is_empty(), "sessions left: {:?}", u.session_ids);
    assert!(u.api3_key_ids.is_empty(), "API3 keys left: {:?}", u.api3_key_ids);
    let id = EnvelopeId("generic:msg_2KWPBgLlAfxdpx2AI54pPJ85f4W".into());
    assert!(app.store.is_processed(&id).await.unwrap());
    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), fake.write_calls());
    assert!(ledger.iter().all(|r| r.entry.subject == "generic:auth0|6543"
        && r.entry.event == "user.deactivated"
        && r.entry.envelope_id == id.0));

    // The very same request again (a retry, or a replay by whoever captured it): harmless.
    let before = fake.calls().len();
    let (status, _) = d.post(&app).await;
    assert_eq!(status, 200);
    app.drained().await;
    assert_eq!(fake.calls().len(), before, "a replay makes no Looker call");
    assert_eq!(app.ledger().await.len(), ledger.len());
    app.stop().await;
}

#[tokio::test]
async fn the_second_secret_verifies_too_during_rotation() {
    let fake = FakeLooker::start().await;
    let uid = fake.add_user("ana@example.com", "Ana", "Lyst");
    fake.add_session(&uid);
    let app = start(Some(fake.clone())).await;

    let d = Delivery::signed(
        NEW_SECRET,
        "msg_rotated",
        unix_now(),
        &event("user.suspended", "ana@example.com"),
    );
    let (status, answer) = d.post(&app).await;
    assert_eq!(status, 200, "{answer}");
    app.drained().await;
    assert!(
        app.store
            .is_processed(&EnvelopeId("generic:msg_rotated".into()))
            .await
            .unwrap()
    );
    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled && u.session_ids.is_empty());

    // A sender mid-rotation signs with both: still one delivery, processed once.
    let ts = unix_now().to_string();
    // later than the suspension: an older event would (rightly) not undo it
    let body = event_at("user.unsuspended", "ana@example.com", "2026-03-01T10:00:00Z");
    let both = format!(
        "{} {}",
        sign(SECRET, "msg_both", &ts, &body).unwrap(),
        sign(NEW_SECRET, "msg_both", &ts, &body).unwrap()
    );
    let d = Delivery {
        id: Some("msg_both".into()),
        timestamp: Some(ts),
        signature: Some(both),
        body,
    };
    assert_eq!(d.post(&app).await.0, 200);
    app.drained().await;
    assert!(
        !fake.user(&uid).unwrap().is_disabled,
        "unsuspended → enabled again"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_batch_of_canonical_events_onboards() {
    let fake = FakeLooker::start().await;
    let app = start(Some(fake.clone())).await;
    let body = json!({"events": [
        {"type": "user.created", "occurred_at": "2026-03-01T09:00:00Z",
         "user": {"id": "kc:acme:5f0c", "email": "isaac.brock@example.com",
                  "first_name": "Isaac", "last_name": "Brock"}},
        {"type": "user.updated", "occurred_at": "2026-03-01T09:05:00Z",
         "user": {"id": "kc:acme:5f0c", "last_name": "Brockman"}}
    ]})
    .to_string();
    let d = Delivery::signed(SECRET, "msg_batch", unix_now(), body.as_bytes());
    let (status, answer) = d.post(&app).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"enqueued": 2}));
    app.drained().await;
    let u = fake
        .user_by_email("isaac.brock@example.com")
        .expect("the default policy creates the user");
    assert!(!u.is_disabled);
    assert_eq!(u.first_name.as_deref(), Some("Isaac"));
    for i in 0..2 {
        let id = EnvelopeId(format!("generic:msg_batch:{i}"));
        assert!(app.store.is_processed(&id).await.unwrap(), "{id}");
    }
    app.stop().await;
}

#[tokio::test]
async fn forged_expired_incomplete_oversized_and_malformed_requests_are_refused_and_enqueue_nothing() {
    let fake = FakeLooker::start().await;
    let app = start(Some(fake.clone())).await;
    let body = event("user.deactivated", "jo.doe@example.com");
    let now = unix_now();
    let good = || Delivery::signed(SECRET, "msg_x", now, &body);
    let without = |f: fn(&mut Delivery)| {
        let mut d = good();
        f(&mut d);
        d
    };
    let mut tampered = good();
    tampered.body = event("user.deactivated", "ceo@example.com");

    let cases: Vec<(&str, Delivery, u16, &str)> = vec![
        (
            "signed with an unknown secret",
            Delivery::signed(FORGER_SECRET, "msg_x", now, &body),
            401,
            "unauthorized",
        ),
        ("body changed after signing", tampered, 401, "unauthorized"),
        (
            "signature not v1",
            without(|d| d.signature = Some("v1a,AAAA".into())),
            401,
            "unauthorized",
        ),
        (
            "no signature",
            without(|d| d.signature = None),
            401,
            "unauthorized",
        ),
        ("no id", without(|d| d.id = None), 400, "bad_request"),
        (
            "no timestamp",
            without(|d| d.timestamp = None),
            400,
            "bad_request",
        ),
        (
            "timestamp not a number",
            without(|d| d.timestamp = Some("yesterday".into())),
            400,
            "bad_request",
        ),
        (
            "expired",
            Delivery::signed(SECRET, "msg_x", now - 600, &body),
            401,
            "timestamp_out_of_tolerance",
        ),
        (
            "from the future",
            Delivery::signed(SECRET, "msg_x", now + 600, &body),
            401,
            "timestamp_out_of_tolerance",
        ),
        (
            "oversized",
            Delivery::signed(SECRET, "msg_x", now, &vec![b' '; 70_000]),
            413,
            "payload_too_large",
        ),
        (
            "not json",
            Delivery::signed(SECRET, "msg_x", now, b"{\"type\": "),
            400,
            "bad_request",
        ),
        (
            "unknown type",
            Delivery::signed(SECRET, "msg_x", now, &event("user.promoted", "a@b.c")),
            400,
            "bad_request",
        ),
        (
            "group event without group",
            Delivery::signed(SECRET, "msg_x", now, &event("group.member_added", "a@b.c")),
            400,
            "bad_request",
        ),
    ];
    for (what, d, want, code) in cases {
        let (status, answer) = d.post(&app).await;
        assert_eq!(status, want, "{what}: {answer}");
        assert_eq!(answer["error"], code, "{what}: {answer}");
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "{what}");
        assert!(!detail.contains("MfKQ9r8G"), "{what}: the secret is never echoed");
    }
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);
    assert!(app.ledger().await.is_empty());
    assert!(fake.calls().is_empty());
    assert!(
        !app.store
            .is_processed(&EnvelopeId("generic:msg_x".into()))
            .await
            .unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_configured_secret_the_hook_answers_503() {
    let app = spawn_app(Options::default()).await;
    let d = Delivery::signed(SECRET, "msg_1", unix_now(), &event("user.deactivated", "a@b.c"));
    let (status, answer) = d.post(&app).await;
    assert_eq!(status, 503);
    assert_eq!(answer["error"], "not_configured");
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);
    app.stop().await;
}
