//! Google Workspace Reports push end to end: `/hooks/google` over HTTP → queue → processor → fake
//! Looker. Requests are built from the handbook's documented notification (headers + body).

use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::ports::StateStore;
use gatehouse_e2e::{Options, TestApp, fixtures_dir, spawn_app};
use gatehouse_testkit::FakeLooker;
use serde_json::Value;

/// The token in the documented notification's `X-Goog-Channel-Token`.
const TOKEN: &str = "245t1234tt83trrt333";
const OLD_TOKEN: &str = "a-token-being-rotated-out";

/// Request headers, in order.
type Headers = Vec<(String, String)>;

/// `{method, url, headers, body}` of a google-workspace fixture.
fn exchange(name: &str) -> Value {
    let p = fixtures_dir().join("google-workspace").join(name);
    let text = std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", p.display()));
    serde_json::from_slice(&text).unwrap()
}

/// The documented CREATE_USER notification, turned into `event` about `email`.
fn notification(event: &str, email: &str) -> (Headers, Vec<u8>) {
    let mut ex = exchange("reports.push.admin.CREATE_USER.docs.json");
    ex["body"]["events"][0]["name"] = event.into();
    ex["body"]["events"][0]["parameters"][0]["value"] = email.into();
    ex["headers"]["X-Goog-Resource-State"] = event.into();
    let body = serde_json::to_vec(&ex["body"]).unwrap();
    (headers_of(&ex), body)
}

fn headers_of(ex: &Value) -> Headers {
    ex["headers"]
        .as_object()
        .unwrap()
        .iter()
        // reqwest sets the real length
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

async fn post(app: &TestApp, headers: &[(String, String)], body: Vec<u8>) -> (u16, Value) {
    let mut req = app.http.post(format!("{}/hooks/google", app.base)).body(body);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn start(fake: Option<FakeLooker>) -> TestApp {
    spawn_app(Options {
        looker: fake,
        extra_toml: format!(
            "[google]\nchannel_tokens = [{OLD_TOKEN:?}, {TOKEN:?}]\nmax_body_bytes = 65536\n"
        ),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn suspend_user_offboards_in_looker_and_a_redelivery_costs_nothing() {
    let fake = FakeLooker::start().await;
    let uid = fake.add_user("liz@example.com", "Liz", "Lemon");
    for _ in 0..2 {
        fake.add_session(&uid);
        fake.add_api3_key(&uid);
    }
    let bystander = fake.add_user("jane@example.com", "Jane", "Roe");
    let bystander_session = fake.add_session(&bystander);
    let app = start(Some(fake.clone())).await;

    // Google sends the address as the admin typed it; the subject is lowercased.
    let (headers, body) = notification("SUSPEND_USER", "Liz@Example.com");
    let (status, answer) = post(&app, &headers, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, serde_json::json!({"enqueued": 1, "ignored": 0}));
    app.drained().await;

    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled, "suspended in Google → disabled in Looker");
    assert!(u.session_ids.is_empty(), "sessions left: {:?}", u.session_ids);
    assert!(u.api3_key_ids.is_empty(), "API3 keys left: {:?}", u.api3_key_ids);
    assert_eq!(
        fake.user(&bystander).unwrap().session_ids,
        vec![bystander_session]
    );
    let id = EnvelopeId("google:2013-09-10T18:23:35.808Z:-0987654321:0".into());
    assert!(app.store.is_processed(&id).await.unwrap());
    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), fake.write_calls(), "one ledger row per write");
    assert!(ledger.iter().all(|r| r.entry.subject == "google:liz@example.com"
        && r.entry.event == "SUSPEND_USER"
        && r.entry.envelope_id == id.0));

    // Google retries on 5xx and may redeliver: the same notification changes nothing, costs nothing.
    let before = fake.calls().len();
    let (status, _) = post(&app, &headers, body).await;
    assert_eq!(status, 200);
    app.drained().await;
    assert_eq!(fake.calls().len(), before, "a redelivery makes no Looker call");
    assert_eq!(app.ledger().await.len(), ledger.len());
    app.stop().await;
}

#[tokio::test]
async fn unsuspend_after_suspend_re_enables() {
    let fake = FakeLooker::start().await;
    let uid = fake.add_user("liz@example.com", "Liz", "Lemon");
    let app = start(Some(fake.clone())).await;

    let (headers, body) = notification("SUSPEND_USER", "liz@example.com");
    assert_eq!(post(&app, &headers, body).await.0, 200);
    app.drained().await;
    assert!(fake.user(&uid).unwrap().is_disabled);

    // a later activity (new time and qualifier)
    let mut ex = exchange("reports.push.admin.CREATE_USER.docs.json");
    ex["body"]["id"]["time"] = "2013-09-10T19:00:00.000Z".into();
    ex["body"]["id"]["uniqueQualifier"] = "-1234".into();
    ex["body"]["events"][0]["name"] = "UNSUSPEND_USER".into();
    let (status, _) = post(&app, &headers_of(&ex), serde_json::to_vec(&ex["body"]).unwrap()).await;
    assert_eq!(status, 200);
    app.drained().await;
    assert!(
        !fake.user(&uid).unwrap().is_disabled,
        "unsuspended in Google → enabled"
    );
    app.stop().await;
}

#[tokio::test]
async fn sync_message_is_200_and_enqueues_nothing() {
    let fake = FakeLooker::start().await;
    let app = start(Some(fake.clone())).await;
    let ex = exchange("reports.push.sync.constructed.json");
    let (status, answer) = post(&app, &headers_of(&ex), Vec::new()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, serde_json::json!({"sync": true, "enqueued": 0}));
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);
    assert!(fake.calls().is_empty(), "nothing reached Looker");
    assert!(app.ledger().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn forged_oversized_and_malformed_notifications_are_refused_and_enqueue_nothing() {
    let fake = FakeLooker::start().await;
    let app = start(Some(fake.clone())).await;
    let (good_headers, good_body) = notification("SUSPEND_USER", "liz@example.com");
    let with = |name: &str, value: Option<&str>| {
        let mut h: Headers = good_headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
            .cloned()
            .collect();
        if let Some(v) = value {
            h.push((name.to_string(), v.to_string()));
        }
        h
    };
    let sync_headers = headers_of(&exchange("reports.push.sync.constructed.json"));
    let wrong_sync: Headers = sync_headers
        .iter()
        .map(|(k, v)| {
            let v = if k == "X-Goog-Channel-Token" {
                "guess"
            } else {
                v.as_str()
            };
            (k.clone(), v.to_string())
        })
        .collect();
    let cases: Vec<(&str, Headers, Vec<u8>, u16, &str)> = vec![
        (
            "wrong token",
            with("X-Goog-Channel-Token", Some("245t1234tt83trrt334")),
            good_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "no token",
            with("X-Goog-Channel-Token", None),
            good_body.clone(),
            401,
            "unauthorized",
        ),
        (
            "token prefix",
            with("X-Goog-Channel-Token", Some("245t1234")),
            good_body.clone(),
            401,
            "unauthorized",
        ),
        ("wrong token on sync", wrong_sync, Vec::new(), 401, "unauthorized"),
        (
            "oversized",
            good_headers.clone(),
            vec![b' '; 70_000],
            413,
            "payload_too_large",
        ),
        (
            "no resource state",
            with("X-Goog-Resource-State", None),
            good_body.clone(),
            400,
            "bad_request",
        ),
        (
            "not json",
            good_headers.clone(),
            b"{\"kind\": ".to_vec(),
            400,
            "bad_request",
        ),
        (
            "not an activity",
            good_headers.clone(),
            br#"{"kind":"admin#reports#activity","events":[]}"#.to_vec(),
            400,
            "bad_request",
        ),
    ];
    for (what, headers, body, want, code) in cases {
        let (status, answer) = post(&app, &headers, body).await;
        assert_eq!(status, want, "{what}: {answer}");
        assert_eq!(answer["error"], code, "{what}");
        assert!(answer["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}");
    }
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);
    assert!(app.ledger().await.is_empty());
    assert!(fake.calls().is_empty());

    // The rotated-out token still works while it is configured.
    let (status, _) = post(&app, &with("X-Goog-Channel-Token", Some(OLD_TOKEN)), good_body).await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn without_a_configured_token_the_hook_answers_503() {
    let app = spawn_app(Options::default()).await;
    let (headers, body) = notification("SUSPEND_USER", "liz@example.com");
    let (status, answer) = post(&app, &headers, body).await;
    assert_eq!(status, 503);
    assert_eq!(answer["error"], "not_configured");
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);
    app.stop().await;
}
