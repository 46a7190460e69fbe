//! The Graph intake at the trust boundary: `clientState` never stored, `tenantId` required, and
//! `deleted` or `members@delta` claims confirmed by a Graph read before anything is done.

use gatehouse_domain::identity::Status;
use gatehouse_domain::ports::StateStore;
use gatehouse_e2e::{Options, TestApp, example_policy, fixtures_dir, seed_catalog, spawn_app, wait_until};
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::graph_fake::FakeGraph;
use serde_json::{Value, json};
use std::time::Duration;

const CLIENT_STATE: &str = "graph-trust-client-state-0123456789";
const USER_ID: &str = "72b08237-30f1-4fbe-be57-1df593448f7a";
const OTHER_ID: &str = "693acd06-2877-4339-8ade-b704261fe7a0";
const GROUP_ID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const EMAIL: &str = "john.doe@example.com";

fn delivery(name: &str, graph: &FakeGraph) -> Value {
    let p = fixtures_dir().join("entra").join(name);
    let mut body: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let expires = (gatehouse_domain::clock::now() + Duration::from_secs(86_400)).to_rfc3339();
    for n in body["value"].as_array_mut().unwrap() {
        n["clientState"] = json!(CLIENT_STATE);
        n["tenantId"] = json!(graph.tenant_id());
        n["subscriptionExpirationDateTime"] = json!(expires);
    }
    body
}

async fn app(graph: &FakeGraph, looker: Option<FakeLooker>) -> TestApp {
    spawn_app(Options {
        looker,
        policy: Some(example_policy()),
        extra_toml: format!(
            "[graph]\nclient_state = {CLIENT_STATE:?}\n{}inbox_poll_interval = \"10ms\"\n",
            graph.toml()
        ),
        ..Default::default()
    })
    .await
}

async fn post(app: &TestApp, body: &Value) -> reqwest::Response {
    app.http
        .post(format!("{}/hooks/graph", app.base))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn settled(app: &TestApp) {
    let store = app.store.clone();
    wait_until("graph inbox processed", || {
        let s = store.clone();
        async move { s.graph_inbox_counts().await.unwrap().pending == 0 }
    })
    .await;
    app.drained().await;
}

/// Whether any file of the data directory (database, WAL) holds `needle`.
fn on_disk(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let bytes = std::fs::read(e.unwrap().path()).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

#[tokio::test]
async fn the_client_state_is_never_stored() {
    let graph = FakeGraph::start().await;
    graph.add_user(USER_ID, EMAIL, "John Doe");
    let app = app(&graph, None).await;
    let r = post(
        &app,
        &delivery("graph.notification.users.updated.constructed.json", &graph),
    )
    .await;
    assert_eq!(r.status(), 202);
    settled(&app).await;
    assert_eq!(app.store.graph_inbox_counts().await.unwrap().done, 1);
    assert!(
        !on_disk(&app.data_dir, CLIENT_STATE.as_bytes()),
        "clientState reached the database (inbox, queue or ledger)"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_notification_without_our_tenant_id_is_refused() {
    let graph = FakeGraph::start().await;
    let app = app(&graph, None).await;
    let mut missing = delivery("graph.notification.users.updated.constructed.json", &graph);
    missing["value"][0].as_object_mut().unwrap().remove("tenantId");
    let mut null = missing.clone();
    null["value"][0]["tenantId"] = Value::Null;
    for body in [missing, null] {
        let r = post(&app, &body).await;
        assert_eq!(r.status(), 403);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"], "forbidden", "{answer}");
    }
    assert_eq!(app.store.graph_inbox_counts().await.unwrap().total(), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_notification_is_believed_only_when_graph_no_longer_has_the_user() {
    let looker = FakeLooker::start().await;
    let uid = looker.add_user(EMAIL, "John", "Doe");
    let graph = FakeGraph::start().await;
    graph.add_user(USER_ID, EMAIL, "John Doe");
    let app = app(&graph, Some(looker.clone())).await;

    // Graph still has John, enabled: the `deleted` claim is not acted on.
    let claim = delivery("graph.notification.users.deleted.constructed.json", &graph);
    assert_eq!(post(&app, &claim).await.status(), 202);
    settled(&app).await;
    assert_eq!(
        graph.count("GET", &format!("/v1.0/users/{USER_ID}")),
        1,
        "graph was asked"
    );
    assert!(
        !looker.user(&uid).unwrap().is_disabled,
        "john was offboarded on a claim"
    );
    let subject = format!("entra:{USER_ID}");
    let status = app
        .store
        .load_subject(&subject)
        .await
        .unwrap()
        .map(|s| s.identity.status);
    assert_ne!(status, Some(Status::Deleted));

    // Graph confirms: John is gone. A new notification now offboards him.
    graph.delete_user(USER_ID);
    let mut real = claim.clone();
    real["value"][0]["resourceData"]["sequenceNumber"] = json!(638059995676961302u64);
    assert_eq!(post(&app, &real).await.status(), 202);
    let fake = looker.clone();
    let id = uid.clone();
    wait_until("john offboarded", || {
        let u = fake.user(&id).unwrap();
        async move { u.is_disabled }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn members_delta_entries_graph_does_not_confirm_are_ignored() {
    let looker = FakeLooker::start().await;
    let c = seed_catalog(&looker);
    let john = looker.add_user(EMAIL, "John", "Doe");
    let jane = looker.add_user("jane@example.com", "Jane", "Roe");
    looker.add_user_to_group(&john, &c.engineers);
    let graph = FakeGraph::start().await;
    graph.add_user(USER_ID, EMAIL, "John Doe");
    graph.add_user(OTHER_ID, "jane@example.com", "Jane Roe");
    graph.add_group(GROUP_ID, "Engineering");
    // The delta claims Jane joined and John left; Graph's listing says the opposite.
    graph.set_members(GROUP_ID, &[USER_ID]);
    let app = app(&graph, Some(looker.clone())).await;
    let delta = delivery(
        "graph.notification.groups.members-delta.UNVERIFIED.constructed.json",
        &graph,
    );
    assert_eq!(post(&app, &delta).await.status(), 202);
    settled(&app).await;
    assert_eq!(graph.count("GET", &format!("/v1.0/groups/{GROUP_ID}/members")), 1);
    assert!(
        looker.user(&john).unwrap().group_ids.contains(&c.engineers),
        "an unconfirmed removal removed john"
    );
    assert!(
        !looker.user(&jane).unwrap().group_ids.contains(&c.engineers),
        "an unconfirmed addition added jane"
    );
    app.stop().await;
}
