//! Microsoft Graph change notifications end to end: `/hooks/graph` over HTTP → inbox → Graph
//! read (fake Graph) → embedded queue → processor → fake Looker.

use gatehouse_domain::identity::Status;
use gatehouse_domain::ports::StateStore;
use gatehouse_e2e::{Options, TestApp, example_policy, fixtures_dir, seed_catalog, spawn_app, wait_until};
use gatehouse_intake::ingress::graph::{DateTime, GraphService};
use gatehouse_platform::config::Config;
use gatehouse_store::catchup_state::CatchupStore;
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::graph_fake::FakeGraph;
use serde_json::{Value, json};
use std::time::Duration;

const CLIENT_STATE: &str = "graph-client-state-for-tests";
const USER_ID: &str = "72b08237-30f1-4fbe-be57-1df593448f7a";
const OTHER_ID: &str = "693acd06-2877-4339-8ade-b704261fe7a0";
const GROUP_ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const EMAIL: &str = "john.doe@example.com";
const UPDATED: &str = "graph.notification.users.updated.constructed.json";
const DELTA: &str = "graph.notification.groups.members-delta.UNVERIFIED.constructed.json";
const NOTIFICATION_URL: &str = "https://gatehouse.example.com/hooks/graph";

fn fixture(name: &str) -> Value {
    let p = fixtures_dir().join("entra").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// A fixture as this deployment would receive it: our clientState, the fake's tenant, and a
/// subscription that has not expired.
fn delivery(name: &str, graph: &FakeGraph) -> Value {
    let mut body = fixture(name);
    let expires = (gatehouse_domain::clock::now() + Duration::from_secs(86_400)).to_rfc3339();
    for n in body["value"].as_array_mut().unwrap() {
        n["clientState"] = json!(CLIENT_STATE);
        n["tenantId"] = json!(graph.tenant_id());
        n["subscriptionExpirationDateTime"] = json!(expires);
    }
    body
}

fn graph_toml(graph: &FakeGraph, extra: &str) -> String {
    format!(
        "[graph]\nclient_state = {CLIENT_STATE:?}\n{}inbox_poll_interval = \"10ms\"\n{extra}",
        graph.toml()
    )
}

async fn graph_app(graph: &FakeGraph, looker: Option<FakeLooker>, extra: &str) -> TestApp {
    spawn_app(Options {
        looker,
        policy: Some(example_policy()),
        extra_toml: graph_toml(graph, extra),
        ..Default::default()
    })
    .await
}

/// The service behind the app's background tasks, driven directly (same database, same config).
fn service(app: &TestApp, graph: &FakeGraph, extra: &str) -> GraphService<gatehouse_store::sqlite::Sqlite> {
    let path = app.dir.path().join("graph-only.toml");
    std::fs::write(&path, graph_toml(graph, extra)).unwrap();
    let cfg = Config::load(Some(&path), |_| None).unwrap();
    GraphService::new(app.store.clone(), app.store.clone(), &cfg.graph)
        .unwrap()
        .expect("graph credentials are configured")
}

async fn post(app: &TestApp, body: &[u8]) -> reqwest::Response {
    app.http
        .post(format!("{}/hooks/graph", app.base))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn post_json(app: &TestApp, body: &Value) -> reqwest::Response {
    post(app, body.to_string().as_bytes()).await
}

/// Wait until the inbox has nothing pending and the queue is empty.
async fn settled(app: &TestApp) {
    let store = app.store.clone();
    wait_until("graph inbox processed", || {
        let s = store.clone();
        async move { s.graph_inbox_counts().await.unwrap().pending == 0 }
    })
    .await;
    app.drained().await;
}

#[tokio::test]
async fn validation_handshake_echoes_the_decoded_token_as_plain_text() {
    let graph = FakeGraph::start().await;
    let app = graph_app(&graph, None, "").await;
    let req = fixture("graph.validation.request.json");
    let want = fixture("graph.validation.response.json");
    let url = req["url"].as_str().unwrap();
    let query = url.split_once('?').unwrap().1;
    let r = app
        .http
        .post(format!("{}/hooks/graph?{query}", app.base))
        .header("content-type", "text/plain; charset=utf-8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    assert_eq!(r.text().await.unwrap(), want["body"].as_str().unwrap());
    assert_eq!(app.store.graph_inbox_counts().await.unwrap().total(), 0);

    // Without a client state the endpoint is closed, handshake included.
    let closed = spawn_app(Options::default()).await;
    let r = closed
        .http
        .post(format!("{}/hooks/graph?{query}", closed.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_configured");
}

#[tokio::test]
async fn forged_expired_oversized_or_malformed_requests_are_refused_and_nothing_is_kept() {
    let graph = FakeGraph::start().await;
    graph.add_user(USER_ID, EMAIL, "John Doe");
    let app = graph_app(&graph, None, "max_body_bytes = 2048\n").await;
    let good = delivery(UPDATED, &graph);

    let mut wrong = good.clone();
    wrong["value"][0]["clientState"] = json!("guessed");
    let mut missing = good.clone();
    missing["value"][0].as_object_mut().unwrap().remove("clientState");
    let mut other_tenant = good.clone();
    other_tenant["value"][0]["tenantId"] = json!("00000000-0000-0000-0000-000000000000");
    // The fixture's own date (2024): longer ago than Graph retries a delivery.
    let mut expired = good.clone();
    expired["value"][0]["subscriptionExpirationDateTime"] = json!("2024-06-20T11:00:00-07:00");
    // One forged entry poisons the whole batch.
    let mut mixed = delivery("graph.notification.users.batch.constructed.json", &graph);
    mixed["value"][1]["clientState"] = json!("guessed");
    let mut bad_id = good.clone();
    bad_id["value"][0]["resource"] = json!("Users/../../me");
    bad_id["value"][0]["resourceData"]["id"] = json!("../../me");
    let mut huge = good.clone();
    huge["value"][0]["padding"] = json!("x".repeat(4096));

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "wrong clientState",
            wrong.to_string().into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "missing clientState",
            missing.to_string().into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "forged entry in a batch",
            mixed.to_string().into_bytes(),
            401,
            "unauthorized",
        ),
        (
            "other tenant",
            other_tenant.to_string().into_bytes(),
            403,
            "forbidden",
        ),
        (
            "expired subscription",
            expired.to_string().into_bytes(),
            400,
            "expired",
        ),
        (
            "oversized",
            huge.to_string().into_bytes(),
            413,
            "payload_too_large",
        ),
        ("not json", b"{\"value\": [".to_vec(), 400, "bad_request"),
        (
            "not a collection",
            br#"{"subscriptionId":"x"}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "empty collection",
            br#"{"value":[]}"#.to_vec(),
            400,
            "bad_request",
        ),
        (
            "unsafe resource id",
            bad_id.to_string().into_bytes(),
            400,
            "bad_request",
        ),
    ];
    for (what, body, status, code) in cases {
        let r = post(&app, &body).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {body}"
        );
        assert!(
            !body.to_string().contains(CLIENT_STATE),
            "{what}: the secret is never echoed"
        );
    }
    let r = app
        .http
        .post(format!(
            "{}/hooks/graph?validationToken={}",
            app.base,
            "v".repeat(2000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an overlong validation token is refused");

    assert_eq!(app.store.graph_inbox_counts().await.unwrap().total(), 0);
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);
    assert!(
        graph.calls().is_empty(),
        "graph was never read: {:?}",
        graph.calls()
    );
    let m = app.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("gatehouse_ingress_rejected_total")
                && l.contains("source=\"graph\"")
                && l.contains("reason=\"unauthorized\"")),
        "{m}"
    );
}

#[tokio::test]
async fn disabled_user_is_offboarded_and_a_redelivery_costs_nothing() {
    let looker = FakeLooker::start().await;
    let uid = looker.add_user(EMAIL, "John", "Doe");
    for _ in 0..2 {
        looker.add_session(&uid);
        looker.add_api3_key(&uid);
    }
    let graph = FakeGraph::start().await;
    graph.add_user(USER_ID, EMAIL, "John Doe");
    graph.set_account_enabled(USER_ID, false);
    // The first read is throttled: the notification waits for Retry-After and is tried again.
    graph.fail_next(429, 1);
    let app = graph_app(&graph, Some(looker.clone()), "").await;
    let body = delivery(UPDATED, &graph);

    let r = post_json(&app, &body).await;
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["duplicates"], 0);

    let fake = looker.clone();
    let id = uid.clone();
    wait_until("looker user offboarded", || {
        let u = fake.user(&id).unwrap();
        async move { u.is_disabled && u.session_ids.is_empty() && u.api3_key_ids.is_empty() }
    })
    .await;
    settled(&app).await;
    let user_path = format!("/v1.0/users/{USER_ID}");
    assert_eq!(graph.count("GET", &user_path), 2, "one throttled read, one good");
    assert_eq!(graph.token_requests(), 1, "the token is cached");
    let read = graph.calls().into_iter().rfind(|c| c.path == user_path).unwrap();
    assert!(read.query_param("$select").unwrap().contains("accountEnabled"));
    let subject = app
        .store
        .load_subject(&format!("entra:{USER_ID}"))
        .await
        .unwrap()
        .unwrap();
    let identity = subject.identity;
    assert_eq!(identity.status, Status::Deactivated);
    assert_eq!(identity.email(), Some(EMAIL));

    // Graph delivers the same notification again: nothing is read, planned or called.
    looker.reset_calls();
    graph.reset_calls();
    let r = post_json(&app, &body).await;
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["duplicates"], 1);
    settled(&app).await;
    assert!(looker.calls().is_empty(), "{:?}", looker.calls());
    assert!(graph.calls().is_empty(), "{:?}", graph.calls());
    assert_eq!(app.store.graph_inbox_counts().await.unwrap().done, 1);
}

#[tokio::test]
async fn subscriptions_are_created_then_renewed_before_expiry_and_recreated_when_gone() {
    let graph = FakeGraph::start().await;
    let extra = format!("notification_url = {NOTIFICATION_URL:?}\n");
    let app = graph_app(&graph, None, &extra).await;

    let g = graph.clone();
    wait_until("two subscriptions at graph", || {
        let n = g.subscriptions().len();
        async move { n == 2 }
    })
    .await;
    let store = app.store.clone();
    wait_until("two subscriptions stored", || {
        let s = store.clone();
        async move { s.graph_subscriptions().await.unwrap().len() == 2 }
    })
    .await;
    let creates: Vec<Value> = graph
        .calls()
        .into_iter()
        .filter(|c| c.method == "POST" && c.path == "/v1.0/subscriptions")
        .map(|c| c.json_body().unwrap())
        .collect();
    assert_eq!(creates.len(), 2);
    let mut resources: Vec<&str> = creates.iter().map(|c| c["resource"].as_str().unwrap()).collect();
    resources.sort();
    assert_eq!(resources, ["/groups", "/users"]);
    for c in &creates {
        assert_eq!(c["changeType"], "updated,deleted");
        assert_eq!(c["notificationUrl"], NOTIFICATION_URL);
        assert_eq!(c["lifecycleNotificationUrl"], NOTIFICATION_URL);
        assert_eq!(c["clientState"], CLIENT_STATE);
    }

    let svc = service(&app, &graph, &extra);
    // Fresh subscriptions: nothing to do.
    let r = svc.renew_due(gatehouse_domain::clock::now()).await.unwrap();
    assert!(r.created.is_empty() && r.renewed.is_empty(), "{r:?}");
    assert_eq!(graph.count("PATCH", "/v1.0/subscriptions"), 0);

    // 27 days on, both are within a day of expiring: renewed in place.
    let soon = gatehouse_domain::clock::now() + Duration::from_secs(3600);
    for mut s in app.store.graph_subscriptions().await.unwrap() {
        graph.set_subscription_expiry(&s.subscription_id, soon);
        s.expires_at = soon;
        app.store.graph_subscription_put(&s).await.unwrap();
    }
    let r = svc.renew_due(gatehouse_domain::clock::now()).await.unwrap();
    assert_eq!(r.renewed.len(), 2, "{r:?}");
    assert!(r.created.is_empty());
    assert_eq!(graph.count("PATCH", "/v1.0/subscriptions/"), 2);
    let renewed_until = gatehouse_domain::clock::now() + Duration::from_secs(27 * 86_400);
    for s in app.store.graph_subscriptions().await.unwrap() {
        assert!(s.expires_at > renewed_until, "{s:?}");
        let at_graph = graph.subscription(&s.subscription_id).unwrap();
        let at_graph =
            DateTime::parse_from_rfc3339(at_graph["expirationDateTime"].as_str().unwrap()).unwrap();
        assert_eq!(at_graph, s.expires_at);
    }

    // Graph dropped one (it expired unseen): renewing gets 404 and it is created again.
    let users = app
        .store
        .graph_subscriptions()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.resource == "users")
        .unwrap();
    graph.remove_subscription(&users.subscription_id);
    let mut s = users.clone();
    s.expires_at = soon;
    app.store.graph_subscription_put(&s).await.unwrap();
    let r = svc.renew_due(gatehouse_domain::clock::now()).await.unwrap();
    assert_eq!(r.created.len(), 1, "{r:?}");
    assert_ne!(r.created[0], users.subscription_id);
    assert_eq!(graph.subscriptions().len(), 2);
}

#[tokio::test]
async fn lifecycle_notifications_renew_recreate_and_reconcile_the_tenant() {
    let looker = FakeLooker::start().await;
    let graph = FakeGraph::start().await;
    graph.set_page_size(2);
    for i in 0..5 {
        let id = format!("00000000-0000-0000-0000-00000000000{i}");
        graph.add_user(&id, &format!("user{i}@example.com"), &format!("User {i}"));
    }
    let uid = looker.add_user("user3@example.com", "User", "3");
    looker.add_session(&uid);
    let extra = format!("notification_url = {NOTIFICATION_URL:?}\n");
    let app = graph_app(&graph, Some(looker.clone()), &extra).await;
    let store = app.store.clone();
    wait_until("subscriptions stored", || {
        let s = store.clone();
        async move { s.graph_subscriptions().await.unwrap().len() == 2 }
    })
    .await;
    // Creating the subscriptions took a delta baseline (issue 18).
    wait_until("delta baselines stored", || {
        let s = store.clone();
        async move {
            s.catchup_get("graph:users").await.unwrap().is_some()
                && s.catchup_get("graph:groups").await.unwrap().is_some()
        }
    })
    .await;
    // One person was disabled while notifications were being missed.
    graph.set_account_enabled("00000000-0000-0000-0000-000000000003", false);
    let subs = app.store.graph_subscriptions().await.unwrap();
    let users_sub = subs.iter().find(|s| s.resource == "users").unwrap().clone();
    let groups_sub = subs.iter().find(|s| s.resource == "groups").unwrap().clone();
    let lifecycle = |sub: &str, event: &str| {
        json!({"value": [{
            "subscriptionId": sub,
            "subscriptionExpirationDateTime": (gatehouse_domain::clock::now() + Duration::from_secs(86_400)).to_rfc3339(),
            "tenantId": graph.tenant_id(),
            "clientState": CLIENT_STATE,
            "lifecycleEvent": event,
        }]})
    };

    // missed → a delta round from the stored deltaLink finds the change; no full listing.
    let r = post_json(&app, &lifecycle(&users_sub.subscription_id, "missed")).await;
    assert_eq!(r.status(), 202);
    let fake = looker.clone();
    let id = uid.clone();
    wait_until("the disabled user is offboarded", || {
        let u = fake.user(&id).unwrap();
        async move { u.is_disabled && u.session_ids.is_empty() }
    })
    .await;
    settled(&app).await;
    let calls = graph.calls();
    assert!(
        !calls.iter().any(|c| c.method == "GET" && c.path == "/v1.0/users"),
        "{calls:?}"
    );
    assert!(calls.iter().any(
        |c| c.path == "/v1.0/users/delta" && c.query_param("$deltatoken").is_some_and(|t| t != "latest")
    ));
    let s = app
        .store
        .load_subject("entra:00000000-0000-0000-0000-000000000003")
        .await
        .unwrap();
    assert!(s.is_some(), "the missed change was caught up");

    // reauthorizationRequired → the subscription is renewed (PATCH).
    let r = post_json(
        &app,
        &lifecycle(&users_sub.subscription_id, "reauthorizationRequired"),
    )
    .await;
    assert_eq!(r.status(), 202);
    let g = graph.clone();
    let patch = format!("/v1.0/subscriptions/{}", users_sub.subscription_id);
    wait_until("subscription renewed", || {
        let n = g.count("PATCH", &patch);
        async move { n == 1 }
    })
    .await;

    // subscriptionRemoved → created again for the same resource.
    graph.remove_subscription(&groups_sub.subscription_id);
    let r = post_json(
        &app,
        &lifecycle(&groups_sub.subscription_id, "subscriptionRemoved"),
    )
    .await;
    assert_eq!(r.status(), 202);
    let store = app.store.clone();
    let old = groups_sub.subscription_id.clone();
    wait_until("groups subscription recreated", || {
        let s = store.clone();
        let old = old.clone();
        async move {
            s.graph_subscriptions()
                .await
                .unwrap()
                .iter()
                .any(|x| x.resource == "groups" && x.subscription_id != old)
        }
    })
    .await;
    assert_eq!(graph.subscriptions().len(), 2);
}

#[tokio::test]
async fn group_membership_changes_reach_looker_groups() {
    let looker = FakeLooker::start().await;
    let c = seed_catalog(&looker);
    let john = looker.add_user(EMAIL, "John", "Doe");
    let jane = looker.add_user("jane@example.com", "Jane", "Roe");
    looker.add_user_to_group(&john, &c.engineers);
    let graph = FakeGraph::start().await;
    graph.add_user(USER_ID, EMAIL, "John Doe");
    graph.add_user(OTHER_ID, "jane@example.com", "Jane Roe");
    graph.add_group(GROUP_ID, "Engineering");
    graph.set_members(GROUP_ID, &[OTHER_ID]);
    let app = graph_app(&graph, Some(looker.clone()), "").await;

    // members@delta: Jane added, John removed.
    let r = post_json(&app, &delivery(DELTA, &graph)).await;
    assert_eq!(r.status(), 202);
    let fake = looker.clone();
    let (jn, jh, eng) = (jane.clone(), john.clone(), c.engineers.clone());
    wait_until("memberships converged", || {
        let (a, b) = (fake.user(&jn).unwrap(), fake.user(&jh).unwrap());
        let eng = eng.clone();
        async move { a.group_ids.contains(&eng) && !b.group_ids.contains(&eng) }
    })
    .await;
    settled(&app).await;

    // A plain group update: the listing is compared with the last one (Jane left).
    graph.set_members(GROUP_ID, &[]);
    let r = post_json(
        &app,
        &delivery("graph.notification.groups.updated.constructed.json", &graph),
    )
    .await;
    assert_eq!(r.status(), 202);
    let fake = looker.clone();
    let (jn, eng) = (jane.clone(), c.engineers.clone());
    wait_until("jane removed", || {
        let a = fake.user(&jn).unwrap();
        let eng = eng.clone();
        async move { !a.group_ids.contains(&eng) }
    })
    .await;
    // One listing confirms the members@delta entries, one serves the plain update.
    assert_eq!(graph.count("GET", &format!("/v1.0/groups/{GROUP_ID}/members")), 2);
}

/// Issue 16: a Graph `mail` / `userPrincipalName` change is a change of the person's linked
/// Looker user (its email follows), never a second user; the disable then closes the original.
#[tokio::test]
async fn a_graph_mail_and_upn_change_follows_the_linked_looker_user_and_disable_closes_it() {
    let looker = FakeLooker::start().await;
    let uid = looker.add_user(EMAIL, "John", "Doe");
    looker.add_session(&uid);
    let graph = FakeGraph::start().await;
    graph.add_user(USER_ID, EMAIL, "John Doe");
    let app = graph_app(&graph, Some(looker.clone()), "").await;
    let mut seq = 638059995676961300_u64;
    let mut notify = || {
        seq += 1;
        let mut body = delivery(UPDATED, &graph);
        body["value"][0]["resourceData"]["sequenceNumber"] = json!(seq);
        body
    };
    let r = post_json(&app, &notify()).await;
    assert_eq!(r.status(), 202);
    settled(&app).await;
    let before: Vec<String> = looker.users().into_iter().map(|u| u.id).collect();
    graph.set_user_field(USER_ID, "mail", json!("john.d@example.com"));
    graph.set_user_field(
        USER_ID,
        "userPrincipalName",
        json!("john.d@contoso.onmicrosoft.com"),
    );
    let r = post_json(&app, &notify()).await;
    assert_eq!(r.status(), 202);
    settled(&app).await;
    let after: Vec<String> = looker.users().into_iter().map(|u| u.id).collect();
    assert_eq!(after, before, "no second looker user");
    assert_eq!(
        looker.user(&uid).unwrap().email.as_deref(),
        Some("john.d@example.com")
    );
    graph.set_account_enabled(USER_ID, false);
    let r = post_json(&app, &notify()).await;
    assert_eq!(r.status(), 202);
    settled(&app).await;
    let u = looker.user(&uid).unwrap();
    assert!(
        u.is_disabled && u.session_ids.is_empty(),
        "the original user is offboarded: {u:?}"
    );
    let after: Vec<String> = looker.users().into_iter().map(|u| u.id).collect();
    assert_eq!(after, before);
}
