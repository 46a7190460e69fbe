//! Okta directory import and hook enrichment against `FakeOkta` (issue 18): a fresh install
//! learns people's groups and profile attributes; a hook event lacking an attribute the policy
//! maps gets it from `GET /api/v1/users/{id}`, once per TTL.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gatehouse_domain::envelope::{Envelope, IdentityEvent};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::policy::{Policy, evaluate};
use gatehouse_domain::ports::{BackendError, Directory, QueueProducer, SubjectState};
use gatehouse_intake::ingress::okta_api::OktaApi;
use gatehouse_intake::ingress::okta_import::{DirectoryImport, Needs};
use gatehouse_intake::ingress::{Deps, okta};
use gatehouse_platform::config::{Config, OktaApiConnection};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_store::state::AnyState;
use gatehouse_testkit::FakeOkta;
use secrecy::SecretString;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

const POLICY: &str = r#"
[[rule]]
name = "engineering"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers"]

[[attribute]]
idp_attribute = "department"
looker_attribute = "dept"

[attributes.dept]
deny_value = "__none__"
"#;

const ACTIVATE: &str =
    include_str!("../../../../../shared/fixtures/okta/event-hook.user.lifecycle.activate.constructed.json");
const HOOK_SECRET: &str = "a-long-okta-hook-secret-0123456789";

/// The queue, and the directory the processor would fold its envelopes into.
#[derive(Clone, Default)]
struct World {
    published: Arc<Mutex<Vec<Envelope>>>,
    directory: Arc<Mutex<BTreeMap<String, Identity>>>,
}

impl QueueProducer for World {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), BackendError> {
        self.published.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }
}

impl Directory for World {
    async fn subjects(&self) -> Result<Vec<SubjectState>, BackendError> {
        Ok(self
            .directory
            .lock()
            .unwrap()
            .values()
            .map(|i| SubjectState {
                identity: i.clone(),
                converged: None,
                version: 0,
            })
            .collect())
    }
}

impl World {
    /// Fold what was published (as the processor does) and forget it; returns how many.
    fn fold(&self) -> usize {
        let batch = std::mem::take(&mut *self.published.lock().unwrap());
        let mut d = self.directory.lock().unwrap();
        for env in &batch {
            d.entry(env.subject.key.clone())
                .or_insert_with(|| Identity::new(env.subject.key.clone()))
                .fold(env);
        }
        batch.len()
    }

    fn person(&self, key: &str) -> Identity {
        self.directory.lock().unwrap().get(key).cloned().unwrap()
    }
}

fn api(fake: &FakeOkta) -> Arc<OktaApi> {
    Arc::new(
        OktaApi::new(
            &OktaApiConnection {
                url: fake.base_url(),
                api_token: SecretString::from(fake.api_token()),
            },
            Duration::from_secs(10),
        )
        .unwrap(),
    )
}

fn add_person(fake: &FakeOkta, id: &str, name: &str, department: &str) {
    fake.add_user(
        id,
        json!({"login": format!("{name}@example.com"), "email": format!("{name}@example.com"),
               "firstName": name, "lastName": "Example", "department": department,
               "mobilePhone": null}),
    );
}

/// (a) A fresh install imports 5 users over 3 pages and the members of the one group the policy
/// names; the policy then gives the Looker groups and attributes from them. The next round
/// publishes only what changed at Okta, and nothing when nothing did.
#[tokio::test]
async fn a_fresh_install_imports_users_groups_and_attributes_and_the_next_round_converges() {
    let fake = FakeOkta::start().await;
    for (i, (name, dept)) in [
        ("ann", "Finance"),
        ("bob", "Sales"),
        ("cy", "Eng"),
        ("dee", "Eng"),
        ("eve", "Ops"),
    ]
    .into_iter()
    .enumerate()
    {
        add_person(&fake, &format!("00u{i}"), name, dept);
    }
    fake.add_group("00gEng", "Engineering");
    fake.add_group("00gOther", "Everyone Else");
    fake.add_to_group("00gEng", "00u2");
    fake.add_to_group("00gEng", "00u3");
    fake.add_to_group("00gOther", "00u0");
    let policy = Policy::from_toml(POLICY).unwrap();
    let world = World::default();
    let import = DirectoryImport::new(
        api(&fake),
        world.clone(),
        world.clone(),
        "acme".into(),
        Needs::of(&policy),
        2,
    );

    let r = import.import_once(gatehouse_domain::clock::now()).await.unwrap();
    assert_eq!((r.users, r.groups, r.skipped), (5, 1, 0), "{r:?}");
    let calls = fake.calls();
    let user_pages = calls.iter().filter(|c| c.path == "/api/v1/users").count();
    assert_eq!(user_pages, 3, "5 users, 2 a page");
    assert!(
        calls.iter().all(|c| c.path != "/api/v1/groups/00gOther/users"),
        "a group the policy does not name is not read"
    );
    assert_eq!(r.calls, calls.len());
    assert_eq!(
        world.fold(),
        5 + 2,
        "a profile per person, a membership per member"
    );

    let desired = |key: &str| evaluate(&policy, &world.person(key));
    assert!(desired("okta:00u2").groups.contains_key("Engineers"));
    assert!(desired("okta:00u3").groups.contains_key("Engineers"));
    assert!(!desired("okta:00u0").groups.contains_key("Engineers"));
    assert_eq!(
        desired("okta:00u0").attributes.get("dept").map(|a| a.0.as_str()),
        Some("Finance")
    );
    assert_eq!(world.person("okta:00u4").email(), Some("eve@example.com"));

    // Nothing changed at Okta: nothing is published.
    let r = import.import_once(gatehouse_domain::clock::now()).await.unwrap();
    assert_eq!(r.published, 0, "{r:?}");

    // dee leaves Engineering, bob joins it, ann moves to Sales: exactly those are published.
    fake.remove_from_group("00gEng", "00u3");
    fake.add_to_group("00gEng", "00u1");
    fake.set_profile("00u0", "department", json!("Sales"));
    let r = import.import_once(gatehouse_domain::clock::now()).await.unwrap();
    assert_eq!(r.published, 3, "{r:?}");
    world.fold();
    assert!(!desired("okta:00u3").groups.contains_key("Engineers"));
    assert!(desired("okta:00u1").groups.contains_key("Engineers"));
    assert_eq!(
        desired("okta:00u0").attributes.get("dept").map(|a| a.0.as_str()),
        Some("Sales")
    );
}

/// A 429 with a reset in the middle of the listing is waited out, and the import completes.
#[tokio::test]
async fn the_import_waits_out_a_rate_limit() {
    let fake = FakeOkta::start().await;
    for i in 0..3 {
        add_person(&fake, &format!("00u{i}"), &format!("p{i}"), "Eng");
    }
    let world = World::default();
    let policy = Policy::from_toml(POLICY).unwrap();
    let import = DirectoryImport::new(
        api(&fake),
        world.clone(),
        world.clone(),
        "acme".into(),
        Needs::of(&policy),
        1,
    );
    fake.throttle_next(Duration::from_millis(200));
    let r = import.import_once(gatehouse_domain::clock::now()).await.unwrap();
    assert_eq!(r.users, 3);
    let statuses: Vec<u16> = fake.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses.first(), Some(&429), "{statuses:?}");
    // Three user pages of one, then the group listing.
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 4, "{statuses:?}");
}

async fn hook_app(fake: &FakeOkta, world: &World, dir: &std::path::Path) -> axum::Router {
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let mut config = Config::defaults();
    config.okta.hook_secret = Some(SecretString::from(HOOK_SECRET.to_string()));
    config.okta.api.url = Some(fake.base_url());
    config.okta.api.api_token = Some(SecretString::from(fake.api_token()));
    config.policy = Some(policy);
    let store = Sqlite::open(dir).await.unwrap();
    okta::router(&Deps {
        queue: world.clone(),
        store: store.clone(),
        state: AnyState::Sqlite(store),
        config: Arc::new(config),
    })
}

async fn deliver(app: &axum::Router, uuid: &str) {
    let mut body: serde_json::Value = serde_json::from_str(ACTIVATE).unwrap();
    body["data"]["events"][0]["uuid"] = json!(uuid);
    let req = Request::post("/hooks/okta")
        .header("content-type", "application/json")
        .header("authorization", HOOK_SECRET)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// (b) A `user.lifecycle.activate` hook (login and display name only) for a person whose Okta
/// department maps to a Looker user attribute: the envelope carries the department, so the
/// attribute is set. (c) A second event within the TTL makes no second API call.
#[tokio::test]
async fn an_activation_hook_is_enriched_with_the_mapped_attribute_once_per_ttl() {
    let fake = FakeOkta::start().await;
    // The fixture's person.
    fake.add_user(
        "00ub0oNGTSWTBKOLGLNR",
        json!({"login": "isaac.brock@example.com", "email": "isaac.brock@example.com",
               "firstName": "Isaac", "lastName": "Brock", "department": "Finance"}),
    );
    let world = World::default();
    let dir = tempfile::tempdir().unwrap();
    let app = hook_app(&fake, &world, dir.path()).await;

    deliver(&app, "b4d0c6a2-0000-0000-0000-000000000001").await;
    let env = world.published.lock().unwrap()[0].clone();
    assert_eq!(env.event, IdentityEvent::UserActivated);
    assert_eq!(env.profile.get("department").map(String::as_str), Some("Finance"));
    world.fold();
    let policy = Policy::from_toml(POLICY).unwrap();
    let desired = evaluate(&policy, &world.person("okta:00ub0oNGTSWTBKOLGLNR"));
    assert_eq!(
        desired.attributes.get("dept").map(|a| a.0.as_str()),
        Some("Finance")
    );

    deliver(&app, "b4d0c6a2-0000-0000-0000-000000000002").await;
    let reads = fake
        .calls()
        .iter()
        .filter(|c| c.path == "/api/v1/users/00ub0oNGTSWTBKOLGLNR")
        .count();
    assert_eq!(
        reads, 1,
        "the second event within the TTL is served from the cache"
    );
    let second = world.published.lock().unwrap()[0].clone();
    assert_eq!(
        second.profile.get("department").map(String::as_str),
        Some("Finance")
    );
}

/// While Okta's window is spent the hook is not held up: no call, the event goes on as it came.
#[tokio::test]
async fn a_spent_rate_limit_window_skips_enrichment_without_delaying_the_hook() {
    let fake = FakeOkta::start().await;
    let world = World::default();
    let dir = tempfile::tempdir().unwrap();
    let app = hook_app(&fake, &world, dir.path()).await;
    fake.throttle_next(Duration::from_secs(60));
    deliver(&app, "b4d0c6a2-0000-0000-0000-000000000003").await;
    deliver(&app, "b4d0c6a2-0000-0000-0000-000000000004").await;
    let published = world.published.lock().unwrap().clone();
    assert_eq!(published.len(), 2);
    assert!(published.iter().all(|e| !e.profile.contains_key("department")));
    assert_eq!(fake.calls().len(), 1, "one 429, then no call until the reset");
}
