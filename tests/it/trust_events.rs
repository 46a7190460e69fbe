//! The trust boundary end to end: a payload's time and a payload's id are claims, not facts.

use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::ports::StateStore;
use gatehouse_e2e::{Options, example_policy, okta_fixture, seed_catalog, spawn_app, wait_until};
use gatehouse_intake::ingress::generic::sign;
use gatehouse_testkit::FakeLooker;
use serde_json::{Value, json};

const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";
const GENERIC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The deactivate fixture (john.doe) with its event's fields replaced.
fn okta_event(uuid: &str, event_type: &str, published: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&okta_fixture(DEACTIVATE)).unwrap();
    let e = &mut body["data"]["events"][0];
    e["uuid"] = json!(uuid);
    e["eventType"] = json!(event_type);
    e["published"] = json!(published);
    body.to_string().into_bytes()
}

#[tokio::test]
async fn an_okta_activate_dated_2099_does_not_stop_a_later_real_deactivate() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;

    // Someone able to post one event (or an IdP with a broken clock) dates an activate 2099.
    app.deliver(&okta_event(
        "forged-2099",
        "user.lifecycle.activate",
        "2099-01-01T00:00:00Z",
    ))
    .await;
    assert!(!fake.user(&uid).unwrap().is_disabled);
    // Then the person really leaves: Okta sends the deactivate with its own (real) time.
    let now = gatehouse_domain::clock::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    app.deliver(&okta_event("real-deactivate", "user.lifecycle.deactivate", &now))
        .await;
    assert!(
        fake.user(&uid).unwrap().is_disabled,
        "the future-dated activate kept the person enabled"
    );
    let subject = app
        .store
        .load_subject("okta:00u3m90rxKjGQ0G6L1d6")
        .await
        .unwrap()
        .unwrap();
    assert!(subject.identity.status.is_offboarded());
    // The clamp is counted per source (a closed label set).
    wait_until("the clamp is counted", || async {
        app.metrics()
            .await
            .lines()
            .any(|l| l.starts_with("gatehouse_event_time_clamped_total{source=\"okta\"} 1"))
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_okta_uuid_naming_a_generic_event_does_not_suppress_it() {
    let fake = FakeLooker::start().await;
    let jo = fake.add_user("jo.doe@example.com", "Jo", "Doe");
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        extra_toml: format!("[generic]\nsecrets = [{GENERIC_SECRET:?}]\n"),
        ..Default::default()
    })
    .await;

    // An Okta event whose uuid is shaped like the generic intake's id for `msg_x`.
    app.deliver(&okta_event(
        "generic:msg_x",
        "user.lifecycle.activate",
        "2026-01-01T00:00:00Z",
    ))
    .await;

    // Later the generic sender's correctly signed event `msg_x`: applied, not taken for a replay.
    let body = json!({
        "type": "user.deactivated",
        "occurred_at": "2026-03-01T09:30:00Z",
        "user": {"id": "auth0|6543", "email": "jo.doe@example.com"}
    })
    .to_string();
    let ts = gatehouse_domain::clock::now().timestamp().to_string();
    let r = app
        .http
        .post(format!("{}/hooks/generic", app.base))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_x")
        .header("webhook-timestamp", &ts)
        .header(
            "webhook-signature",
            sign(GENERIC_SECRET, "msg_x", &ts, body.as_bytes()).unwrap(),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    app.drained().await;
    assert!(
        app.store
            .is_processed(&EnvelopeId("generic:msg_x".into()))
            .await
            .unwrap()
    );
    assert!(
        fake.user(&jo).unwrap().is_disabled,
        "the signed generic event was dropped as a duplicate of the okta one"
    );
    // Both are recorded, each in its own namespace.
    assert!(
        app.store
            .is_processed(&EnvelopeId("okta:default:generic:msg_x".into()))
            .await
            .unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_okta_uuid_that_is_not_an_id_is_refused_and_enqueues_nothing() {
    let app = spawn_app(Options::default()).await;
    for uuid in [
        "a".repeat(257),
        "tab\there".into(),
        "new\nline".into(),
        String::new(),
    ] {
        let r = app
            .post_okta(&okta_event(
                &uuid,
                "user.lifecycle.deactivate",
                "2026-01-01T00:00:00Z",
            ))
            .await;
        assert_eq!(r.status(), 400, "{uuid:?}");
        let answer: Value = r.json().await.unwrap();
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.starts_with("data.events[0] is invalid: "), "{detail}");
        assert!(detail.contains("uuid"), "{detail}");
    }
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);
    app.stop().await;
}
