//! SCIM 2.0 server end to end: HTTP → directory + outbox (one transaction) → relay → queue →
//! processor → fake Looker. Also every documented Okta / Entra exchange in
//! `../shared/fixtures/scim`, replayed against the server.

use gatehouse_domain::envelope::Envelope;
use gatehouse_e2e::{Options, TestApp, example_policy, fixtures_dir, seed_catalog, spawn_app, wait_until};
use gatehouse_store::scim_store::{ScimChange, ScimKind, ScimWrite};
use gatehouse_testkit::FakeLooker;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

const TOKEN: &str = "scim-test-token-0123456789";
const OTHER_TOKEN: &str = "scim-second-token-abcdefghij";
const REVOKED_TOKEN: &str = "scim-revoked-token-abcdefghij";
const EXPIRED_TOKEN: &str = "scim-expired-token-abcdefghij";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The expired token's `expires_at` has no seconds: that form used to be dropped silently, so the
/// token never expired (issue 11, finding 7).
fn scim_toml() -> String {
    format!(
        "[scim]\nrelay_interval = \"50ms\"\nmax_body_bytes = 65536\n\
         [[scim.tokens]]\nname = \"okta\"\ntoken = \"{TOKEN}\"\n\
         [[scim.tokens]]\nname = \"entra\"\ntoken = \"{OTHER_TOKEN}\"\n\
         [[scim.tokens]]\nname = \"old\"\ntoken = \"{REVOKED_TOKEN}\"\nrevoked = true\n\
         [[scim.tokens]]\nname = \"expired\"\ntoken = \"{EXPIRED_TOKEN}\"\nexpires_at = 2020-01-01T00:00Z\n"
    )
}

async fn app_with(looker: Option<FakeLooker>, policy: Option<String>) -> TestApp {
    spawn_app(Options {
        looker,
        policy,
        extra_toml: scim_toml(),
        ..Default::default()
    })
    .await
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call_with(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let url = if path.starts_with("/scim/v2") {
        format!("{}{path}", app.base)
    } else {
        format!("{}/scim/v2{path}", app.base)
    };
    let mut req = app.http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not json ({e}): {text}"))
    };
    Reply {
        status,
        headers,
        body,
    }
}

async fn call(app: &TestApp, method: Method, path: &str, body: Option<&Value>) -> Reply {
    call_with(app, Some(TOKEN), method, path, body).await
}

async fn post(app: &TestApp, path: &str, body: Value) -> Reply {
    let r = call(app, Method::POST, path, Some(&body)).await;
    assert_eq!(r.status, 201, "POST {path}: {}", r.body);
    r
}

async fn patch(app: &TestApp, path: &str, ops: Value) -> Reply {
    let body = json!({ "schemas": [PATCH_OP], "Operations": ops });
    let r = call(app, Method::PATCH, path, Some(&body)).await;
    assert!(
        r.status == 200 || r.status == 204,
        "PATCH {path}: {} {}",
        r.status,
        r.body
    );
    r
}

/// Wait until the relay has published the outbox and the processor has drained the queue.
async fn settled(app: &TestApp) {
    let store = app.store.clone();
    wait_until("scim outbox relayed", || {
        let s = store.clone();
        async move { s.scim_outbox_depth().await.unwrap() == 0 }
    })
    .await;
    app.drained().await;
}

fn user_body(user_name: &str, email: &str, given: &str, family: &str) -> Value {
    json!({
        "schemas": [USER, ENTERPRISE],
        "userName": user_name,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": true, "value": email, "type": "work"}],
        "displayName": format!("{given} {family}"),
        "active": true,
        "password": "1mz050nq",
        ENTERPRISE: {"department": "R&D"},
    })
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Provisioning sequences → the fake Looker

#[tokio::test]
async fn okta_provisioning_sequence_converges_looker() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let app = app_with(Some(fake.clone()), Some(example_policy())).await;

    // Okta: look up, create, create the group, push the name then the membership.
    let r = call(
        &app,
        Method::GET,
        "/Users?filter=userName%20eq%20%22ada%40example.com%22&startIndex=1&count=100",
        None,
    )
    .await;
    assert_eq!(r.body["totalResults"], 0);
    let user = post(
        &app,
        "/Users",
        user_body("ada@example.com", "ada@example.com", "Ada", "Lovelace"),
    )
    .await;
    assert!(user.body.get("password").is_none(), "password is never returned");
    let uid = user.body["id"].as_str().unwrap().to_string();
    let group = post(
        &app,
        "/Groups",
        json!({"schemas": [GROUP], "displayName": "Engineering", "members": []}),
    )
    .await;
    let gid = group.body["id"].as_str().unwrap().to_string();
    patch(
        &app,
        &format!("/Groups/{gid}"),
        json!([{"op": "replace", "value": {"id": gid, "displayName": "Engineering"}}]),
    )
    .await;
    patch(
        &app,
        &format!("/Groups/{gid}"),
        json!([{"op": "add", "path": "members", "value": [{"value": uid, "display": "ada@example.com"}]}]),
    )
    .await;
    settled(&app).await;
    let u = fake
        .user_by_email("ada@example.com")
        .expect("looker user created");
    assert!(!u.is_disabled);
    assert_eq!(
        (u.first_name.as_deref(), u.last_name.as_deref()),
        (Some("Ada"), Some("Lovelace"))
    );
    assert_eq!(u.group_ids, set(&[&c.engineers]));
    assert_eq!(u.direct_role_ids, set(&[&c.viewer, &c.developer]));
    // The user resource shows its group.
    let r = call(&app, Method::GET, &format!("/Users/{uid}"), None).await;
    assert_eq!(r.body["groups"][0]["value"], gid.as_str());
    assert_eq!(r.body["groups"][0]["display"], "Engineering");

    // Deactivate (Okta: replace without path) → disabled, sessions and API3 keys revoked.
    fake.add_session(&u.id);
    fake.add_api3_key(&u.id);
    let r = patch(
        &app,
        &format!("/Users/{uid}"),
        json!([{"op": "replace", "value": {"active": false}}]),
    )
    .await;
    assert_eq!(r.body["active"], false);
    settled(&app).await;
    let u = fake.user(&u.id).unwrap();
    assert!(u.is_disabled);
    assert!(u.session_ids.is_empty() && u.api3_key_ids.is_empty(), "{u:?}");
    assert!(!u.group_ids.contains(&c.engineers));

    // Reactivate → enabled, groups back.
    patch(
        &app,
        &format!("/Users/{uid}"),
        json!([{"op": "replace", "value": {"active": true}}]),
    )
    .await;
    settled(&app).await;
    let u = fake.user(&u.id).unwrap();
    assert!(!u.is_disabled);
    assert_eq!(u.group_ids, set(&[&c.engineers]));

    // Okta removes the membership with a value-filter path → the managed group goes.
    patch(
        &app,
        &format!("/Groups/{gid}"),
        json!([{"op": "remove", "path": format!("members[value eq \"{uid}\"]")}]),
    )
    .await;
    settled(&app).await;
    assert!(fake.user(&u.id).unwrap().group_ids.is_empty());

    // Okta never deletes users; deleting one anyway offboards it.
    let r = call(&app, Method::DELETE, &format!("/Users/{uid}"), None).await;
    assert_eq!(r.status, 204);
    settled(&app).await;
    assert!(fake.user(&u.id).unwrap().is_disabled);
    let r = call(&app, Method::GET, &format!("/Users/{uid}"), None).await;
    assert_eq!(r.status, 404);
    app.stop().await;
}

#[tokio::test]
async fn entra_provisioning_sequence_converges_looker_and_delete_removes_the_user() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    // Offboarding deletes the Looker user at once (delete_after_days = 0).
    let policy = example_policy().replace("delete_after_days = 30", "delete_after_days = 0");
    let app = app_with(Some(fake.clone()), Some(policy)).await;

    let entra = |m, p: String, b: Option<Value>| {
        let app = &app;
        async move { call_with(app, Some(OTHER_TOKEN), m, &p, b.as_ref()).await }
    };
    let r = entra(
        Method::GET,
        "/Users?filter=userName eq \"grace@example.com\"".into(),
        None,
    )
    .await;
    assert_eq!((r.status, r.body["totalResults"].clone()), (200, json!(0)));
    let mut body = user_body("grace@example.com", "grace@example.com", "Grace", "Hopper");
    body["externalId"] = json!("0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    body["roles"] = json!([]);
    let r = entra(Method::POST, "/Users".into(), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/scim+json"));
    let uid = r.body["id"].as_str().unwrap().to_string();
    let r = entra(
        Method::POST,
        "/Groups".into(),
        Some(json!({
            "schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "Engineering",
            "meta": {"resourceType": "Group"},
        })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let gid = r.body["id"].as_str().unwrap().to_string();
    let r = entra(
        Method::PATCH,
        format!("/Groups/{gid}"),
        Some(json!({"schemas": [PATCH_OP], "Operations": [
            {"op": "Add", "path": "members", "value": [{"$ref": null, "value": uid}]}]})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    settled(&app).await;
    let u = fake
        .user_by_email("grace@example.com")
        .expect("looker user created");
    assert_eq!(u.group_ids, set(&[&c.engineers]));
    fake.add_session(&u.id);
    fake.add_api3_key(&u.id);

    // Legacy Entra disables with the string "False".
    let r = entra(
        Method::PATCH,
        format!("/Users/{uid}"),
        Some(json!({"schemas": [PATCH_OP], "Operations": [
            {"op": "Replace", "path": "active", "value": "False"}]})),
    )
    .await;
    assert_eq!((r.status, r.body["active"].clone()), (200, json!(false)));
    settled(&app).await;
    // delete_after_days = 0: the sweep removes the disabled user right away.
    wait_until("looker user deleted after the grace period", || async {
        fake.user(&u.id).is_none()
    })
    .await;

    // Reactivate ("True") → a fresh Looker user, enabled, with its group.
    let r = entra(
        Method::PATCH,
        format!("/Users/{uid}"),
        Some(json!({"schemas": [PATCH_OP], "Operations": [
            {"op": "Replace", "path": "active", "value": "True"}]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    settled(&app).await;
    let u = fake.user_by_email("grace@example.com").expect("recreated");
    assert!(!u.is_disabled);
    assert_eq!(u.group_ids, set(&[&c.engineers]));

    // Entra removes membership with path "members" and a value array.
    let r = entra(
        Method::PATCH,
        format!("/Groups/{gid}"),
        Some(json!({"schemas": [PATCH_OP], "Operations": [
            {"op": "Remove", "path": "members", "value": [{"$ref": null, "value": uid}]}]})),
    )
    .await;
    assert_eq!(r.status, 204);
    settled(&app).await;
    assert!(fake.user(&u.id).unwrap().group_ids.is_empty());

    // DELETE → offboarded and, per policy, removed.
    let r = entra(Method::DELETE, format!("/Users/{uid}"), None).await;
    assert_eq!(r.status, 204);
    settled(&app).await;
    wait_until("looker user removed after delete", || async {
        fake.user_by_email("grace@example.com").is_none()
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_change_looker_does_not_care_about_makes_no_looker_call() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let department = fake.add_user_attribute("department");
    let policy = format!(
        "{}\n[[attribute]]\nidp_attribute = \"department\"\nlooker_attribute = \"department\"\n\
         [attributes.department]\ndeny_value = \"__none__\"\n",
        example_policy()
    );
    let app = app_with(Some(fake.clone()), Some(policy)).await;
    let r = post(
        &app,
        "/Users",
        user_body("lin@example.com", "lin@example.com", "Lin", "Ma"),
    )
    .await;
    let uid = r.body["id"].as_str().unwrap().to_string();
    let version = r.body["meta"]["version"].clone();
    settled(&app).await;
    assert!(fake.user_by_email("lin@example.com").is_some());

    // Same value again: no write at all (version unchanged), so no event.
    let before = fake.calls().len();
    let r = patch(
        &app,
        &format!("/Users/{uid}"),
        json!([{"op": "replace", "path": "name.givenName", "value": "Lin"}]),
    )
    .await;
    assert_eq!(
        r.body["meta"]["version"], version,
        "an unchanged resource is not rewritten"
    );
    // A change Looker does not use (nickName): written, relayed, processed — zero Looker calls.
    let r = patch(
        &app,
        &format!("/Users/{uid}"),
        json!([{"op": "add", "path": "nickName", "value": "Babs"}]),
    )
    .await;
    assert_ne!(r.body["meta"]["version"], version);
    settled(&app).await;
    assert_eq!(fake.calls().len(), before, "{:#?}", &fake.calls()[before..]);

    // A change it does use (the enterprise department, mapped by the policy) costs calls.
    patch(
        &app,
        &format!("/Users/{uid}"),
        json!([{"op": "replace", "path": format!("{ENTERPRISE}:department"), "value": "Sales"}]),
    )
    .await;
    settled(&app).await;
    assert!(fake.calls().len() > before);
    let u = fake.user_by_email("lin@example.com").unwrap();
    assert_eq!(
        u.attribute_values.get(&department).map(String::as_str),
        Some("Sales")
    );
    app.stop().await;
}

/// Issue 13: the ids Gatehouse makes for new resources are ordered by creation (UUIDv7), so the
/// directory's unique id index and the queue's subject index (`scim:<id>`) take each group
/// commit's new rows together at their end, not on a random page each. A random id (v4) puts
/// twelve ids in creation order once in 12! (4.8e8) runs.
#[tokio::test]
async fn new_resource_ids_sort_in_the_order_they_were_made() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let app = app_with(Some(fake.clone()), Some(example_policy())).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let body = user_body(
            &format!("order{i}@example.com"),
            &format!("order{i}@example.com"),
            "Or",
            "Der",
        );
        let r = post(&app, "/Users", body).await;
        ids.push(r.body["id"].as_str().expect("an id").to_string());
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids in the order the users were created");
    app.stop().await;
}

#[tokio::test]
async fn outbox_rows_left_by_a_crash_are_relayed() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let app = app_with(Some(fake.clone()), Some(example_policy())).await;
    // A directory change committed with its outbox row, by a process that died before it could
    // publish: written straight to the store, so no request wakes the relay.
    let env = Envelope::from_json(
        &json!({
            "version": 1, "id": "crash-1", "source": "scim",
            "subject": {"key": "scim:crashed", "email": "crash@example.com", "display_name": null},
            "occurred_at": "2026-01-01T00:00:00Z", "received_at": "2026-01-01T00:00:00Z",
            "event": {"type": "user_created"},
            "profile": {"email": "crash@example.com", "firstName": "C", "lastName": "Rash"},
            "source_event_type": "scim.user.create", "raw": {},
        })
        .to_string(),
    )
    .unwrap();
    app.store
        .scim_write(&ScimWrite {
            at: env.occurred_at,
            changes: vec![ScimChange::Insert {
                id: "crashed".into(),
                kind: ScimKind::User,
                user_name: Some("crash@example.com".into()),
                body: json!({"userName": "crash@example.com", "active": true}),
            }],
            outbox: vec![env],
        })
        .await
        .unwrap();
    settled(&app).await;
    wait_until("looker user from the relayed outbox", || async {
        fake.user_by_email("crash@example.com").is_some()
    })
    .await;
    let r = call(&app, Method::GET, "/Users/crashed", None).await;
    assert_eq!(r.body["userName"], "crash@example.com");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Protocol: filters, pagination, projections, ETags, errors

#[tokio::test]
async fn filters_pagination_projection_and_etags() {
    let app = app_with(None, None).await;
    let mut ids = BTreeMap::new();
    for (name, email_type, dept, active) in [
        ("alice@example.com", "work", "Eng", true),
        ("bob@example.com", "home", "Eng", true),
        ("carol@other.org", "work", "Ops", false),
    ] {
        let mut b = user_body(name, name, "X", "Y");
        b["emails"][0]["type"] = json!(email_type);
        b[ENTERPRISE]["department"] = json!(dept);
        b["active"] = json!(active);
        let r = post(&app, "/Users", b).await;
        ids.insert(name, r.body["id"].as_str().unwrap().to_string());
    }
    let names = |r: &Reply| -> Vec<String> {
        r.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["userName"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    let q = |f: &str| format!("/Users?filter={}", f.replace(' ', "%20").replace('"', "%22"));
    for (filter, want) in [
        ("userName eq \"ALICE@example.com\"", vec!["alice@example.com"]),
        (
            "userName ne \"alice@example.com\"",
            vec!["bob@example.com", "carol@other.org"],
        ),
        (
            "userName co \"example\"",
            vec!["alice@example.com", "bob@example.com"],
        ),
        ("userName sw \"car\"", vec!["carol@other.org"]),
        ("nickName pr", vec![]),
        (
            "displayName pr and active eq true",
            vec!["alice@example.com", "bob@example.com"],
        ),
        (
            "userName sw \"a\" or userName sw \"c\"",
            vec!["alice@example.com", "carol@other.org"],
        ),
        (
            "emails[type eq \"work\"].value eq \"carol@other.org\"",
            vec!["carol@other.org"],
        ),
        (
            "emails[type eq \"work\" and value co \"alice\"]",
            vec!["alice@example.com"],
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"ops\"",
            vec!["carol@other.org"],
        ),
        ("active eq false", vec!["carol@other.org"]),
    ] {
        let r = call(&app, Method::GET, &q(filter), None).await;
        assert_eq!(r.status, 200, "{filter}: {}", r.body);
        assert_eq!(names(&r), want, "{filter}");
        assert_eq!(r.body["totalResults"], want.len(), "{filter}");
    }
    // id compares case-exactly.
    let alice = &ids["alice@example.com"];
    let r = call(
        &app,
        Method::GET,
        &q(&format!("id eq \"{}\"", alice.to_uppercase())),
        None,
    )
    .await;
    assert_eq!(r.body["totalResults"], 0);

    // Pagination: 1-based startIndex, count, totalResults counts every match.
    let r = call(&app, Method::GET, "/Users?startIndex=2&count=1", None).await;
    assert_eq!(
        (
            r.body["totalResults"].clone(),
            r.body["startIndex"].clone(),
            r.body["itemsPerPage"].clone()
        ),
        (json!(3), json!(2), json!(1))
    );
    assert_eq!(names(&r), vec!["bob@example.com"]);
    let r = call(&app, Method::GET, "/Users?startIndex=0&count=0", None).await;
    assert_eq!((r.body["totalResults"].clone(), names(&r).len()), (json!(3), 0));

    // attributes / excludedAttributes.
    let r = call(
        &app,
        Method::GET,
        &format!("/Users/{alice}?attributes=userName,name.familyName"),
        None,
    )
    .await;
    let keys: BTreeSet<&str> = r.body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["id", "schemas", "userName", "name"]));
    assert_eq!(r.body["name"], json!({"familyName": "Y"}));
    let r = call(
        &app,
        Method::GET,
        &format!("/Users?excludedAttributes=emails,{ENTERPRISE}"),
        None,
    )
    .await;
    assert!(
        r.body["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u.get("emails").is_none() && u.get(ENTERPRISE).is_none() && u.get("userName").is_some())
    );

    // ETag / If-Match.
    let r = call(&app, Method::GET, &format!("/Users/{alice}"), None).await;
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(r.body["meta"]["version"], etag.as_str());
    let stale = app
        .http
        .patch(format!("{}/scim/v2/Users/{alice}", app.base))
        .bearer_auth(TOKEN)
        .header("if-match", "W/\"999\"")
        .json(
            &json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "title", "value": "x"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let fresh = app
        .http
        .put(format!("{}/scim/v2/Users/{alice}", app.base))
        .bearer_auth(TOKEN)
        .header("if-match", &etag)
        .json(&json!({"schemas": [USER], "userName": "alice@example.com", "title": "Boss"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    let new_etag = fresh.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(new_etag, etag);
    let body: Value = fresh.json().await.unwrap();
    assert_eq!(body["title"], "Boss");
    assert!(body.get("emails").is_none(), "PUT replaces the whole resource");
    assert_eq!(body["active"], true, "PUT without active keeps it");
    let delete = app
        .http
        .delete(format!("{}/scim/v2/Users/{alice}", app.base))
        .bearer_auth(TOKEN)
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 412, "an old ETag cannot delete");

    // Discovery describes what is supported.
    let r = call(&app, Method::GET, "/ServiceProviderConfig", None).await;
    assert_eq!(r.body["patch"]["supported"], true);
    assert_eq!(r.body["etag"]["supported"], true);
    assert_eq!(r.body["bulk"]["supported"], false);
    assert_eq!(r.body["sort"]["supported"], false);
    assert_eq!(r.body["authenticationSchemes"][0]["type"], "oauthbearertoken");
    let r = call(&app, Method::GET, "/ResourceTypes", None).await;
    assert_eq!(r.body["totalResults"], 2);
    assert_eq!(
        r.body["Resources"][0]["schemaExtensions"][0]["schema"],
        ENTERPRISE
    );
    let r = call(&app, Method::GET, "/Schemas", None).await;
    let schema_ids: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(schema_ids, vec![USER, GROUP, ENTERPRISE]);
    let r = call(&app, Method::GET, &format!("/Schemas/{ENTERPRISE}"), None).await;
    assert_eq!(r.status, 200);
    let r = call(&app, Method::GET, "/Bulk", None).await;
    assert_eq!((r.status, r.body["schemas"][0].as_str()), (404, Some(ERROR)));
    app.stop().await;
}

/// (what, token, method, path, raw body, content-type, expected status, expected scimType)
type BadCase = (
    &'static str,
    Option<&'static str>,
    Method,
    String,
    Option<String>,
    Option<&'static str>,
    u16,
    Option<&'static str>,
);

/// Every rejected request: the right status, a SCIM error body, nothing stored, nothing
/// enqueued (checked at the end against the fake Looker, which only ever sees the good user).
#[tokio::test]
async fn bad_requests_are_rejected_and_leave_nothing_behind() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let app = app_with(Some(fake.clone()), Some(example_policy())).await;
    let good = user_body("kept@example.com", "kept@example.com", "K", "P");
    let bad = |n: &str| user_body(&format!("{n}@example.com"), &format!("{n}@example.com"), "B", "D");

    let cases: Vec<BadCase> = vec![
        // (what, token, method, path, raw body, content-type, status, scimType)
        (
            "no token",
            None,
            Method::POST,
            "/Users".into(),
            Some(bad("a").to_string()),
            None,
            401,
            None,
        ),
        (
            "forged token",
            Some("scim-test-token-0123456780"),
            Method::POST,
            "/Users".into(),
            Some(bad("b").to_string()),
            None,
            401,
            None,
        ),
        (
            "revoked token",
            Some(REVOKED_TOKEN),
            Method::POST,
            "/Users".into(),
            Some(bad("c").to_string()),
            None,
            401,
            None,
        ),
        (
            "expired token",
            Some(EXPIRED_TOKEN),
            Method::POST,
            "/Users".into(),
            Some(bad("d").to_string()),
            None,
            401,
            None,
        ),
        (
            "token in the wrong scheme",
            Some("basic"),
            Method::POST,
            "/Users".into(),
            Some(bad("e").to_string()),
            None,
            401,
            None,
        ),
        (
            "oversized",
            Some(TOKEN),
            Method::POST,
            "/Users".into(),
            Some(json!({"userName": "big@example.com", "title": "x".repeat(70_000)}).to_string()),
            None,
            413,
            None,
        ),
        (
            "not json",
            Some(TOKEN),
            Method::POST,
            "/Users".into(),
            Some("{\"userName\": ".into()),
            None,
            400,
            Some("invalidSyntax"),
        ),
        (
            "wrong content type",
            Some(TOKEN),
            Method::POST,
            "/Users".into(),
            Some(bad("f").to_string()),
            Some("text/plain"),
            415,
            Some("invalidSyntax"),
        ),
        (
            "no userName",
            Some(TOKEN),
            Method::POST,
            "/Users".into(),
            Some(json!({"schemas": [USER], "name": {"givenName": "N"}}).to_string()),
            None,
            400,
            Some("invalidValue"),
        ),
        (
            "userName not a string",
            Some(TOKEN),
            Method::POST,
            "/Users".into(),
            Some(json!({"userName": 7}).to_string()),
            None,
            400,
            Some("invalidValue"),
        ),
        (
            "active not a boolean",
            Some(TOKEN),
            Method::POST,
            "/Users".into(),
            Some(json!({"userName": "g@example.com", "active": "perhaps"}).to_string()),
            None,
            400,
            Some("invalidValue"),
        ),
        (
            "group with an unknown member",
            Some(TOKEN),
            Method::POST,
            "/Groups".into(),
            Some(json!({"displayName": "G", "members": [{"value": "nobody"}]}).to_string()),
            None,
            400,
            Some("invalidValue"),
        ),
        (
            "bad filter",
            Some(TOKEN),
            Method::GET,
            "/Users?filter=userName%20eq".into(),
            None,
            None,
            400,
            Some("invalidFilter"),
        ),
        (
            "bad startIndex",
            Some(TOKEN),
            Method::GET,
            "/Users?startIndex=first".into(),
            None,
            None,
            400,
            Some("invalidValue"),
        ),
        (
            "unknown user",
            Some(TOKEN),
            Method::GET,
            "/Users/nope".into(),
            None,
            None,
            404,
            None,
        ),
    ];
    for (what, token, method, path, body, ct, status, scim_type) in &cases {
        let mut req = app
            .http
            .request(method.clone(), format!("{}/scim/v2{path}", app.base));
        if let Some(t) = token {
            req = if *t == "basic" {
                req.header("authorization", format!("Basic {TOKEN}"))
            } else {
                req.bearer_auth(t)
            };
        }
        if let Some(b) = body {
            req = req
                .header("content-type", ct.unwrap_or("application/scim+json"))
                .body(b.clone());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), *status, "{what}");
        assert_eq!(
            r.headers().get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/scim+json"),
            "{what}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["schemas"], json!([ERROR]), "{what}: {body}");
        assert_eq!(body["status"], status.to_string(), "{what}: {body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {body}"
        );
        assert_eq!(body["scimType"].as_str(), *scim_type, "{what}: {body}");
        assert!(
            !body.to_string().contains(TOKEN),
            "{what}: the token never appears in errors"
        );
    }
    assert_eq!(app.store.scim_resource_count().await.unwrap(), 0);
    assert_eq!(app.store.scim_outbox_depth().await.unwrap(), 0);
    assert_eq!(app.store.queue_depth().await.unwrap(), 0);

    // A good user, then the failures that need one: duplicate userName (any case), bad PATCH,
    // PATCH of a read-only attribute, unknown member added by PATCH.
    let r = post(&app, "/Users", good.clone()).await;
    let uid = r.body["id"].as_str().unwrap().to_string();
    let mut dup = good.clone();
    dup["userName"] = json!("KEPT@example.com");
    let r = call(&app, Method::POST, "/Users", Some(&dup)).await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{}",
        r.body
    );
    let r = post(&app, "/Users", bad("other")).await;
    let other = r.body["id"].as_str().unwrap().to_string();
    let r = call(
        &app,
        Method::PATCH,
        &format!("/Users/{other}"),
        Some(&json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "userName", "value": "kept@example.com"}]})),
    )
    .await;
    assert_eq!((r.status, r.body["scimType"].as_str()), (409, Some("uniqueness")));
    for (ops, scim_type) in [
        (
            json!([{"op": "jump", "path": "title", "value": "x"}]),
            "invalidSyntax",
        ),
        (json!([{"op": "remove"}]), "noTarget"),
        (
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            "mutability",
        ),
        (
            json!([{"op": "replace", "path": "emails[type eq", "value": "x"}]),
            "invalidPath",
        ),
        (
            json!([{"op": "replace", "path": "active", "value": "maybe"}]),
            "invalidValue",
        ),
    ] {
        let r = call(
            &app,
            Method::PATCH,
            &format!("/Users/{uid}"),
            Some(&json!({"schemas": [PATCH_OP], "Operations": ops})),
        )
        .await;
        assert_eq!(
            (r.status, r.body["scimType"].as_str()),
            (400, Some(scim_type)),
            "{ops}"
        );
    }
    let r = post(&app, "/Groups", json!({"displayName": "Engineering"})).await;
    let gid = r.body["id"].as_str().unwrap().to_string();
    let r = call(
        &app,
        Method::PATCH,
        &format!("/Groups/{gid}"),
        Some(&json!({"schemas": [PATCH_OP], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": uid}]},
            {"op": "add", "path": "members", "value": [{"value": "ghost"}]}]})),
    )
    .await;
    assert_eq!(
        (r.status, r.body["scimType"].as_str()),
        (400, Some("invalidValue"))
    );
    settled(&app).await;
    // Only the two good users reached Looker; the rejected PATCHes changed nothing.
    let emails: BTreeSet<String> = fake.users().into_iter().filter_map(|u| u.email).collect();
    assert!(emails.contains("kept@example.com") && emails.contains("other@example.com"));
    for n in ["a", "b", "c", "d", "e", "f", "g", "big"] {
        assert!(
            !emails.contains(&format!("{n}@example.com")),
            "{n} reached Looker"
        );
    }
    let u = fake.user_by_email("kept@example.com").unwrap();
    assert!(
        u.group_ids.is_empty(),
        "the failed membership PATCH changed nothing"
    );
    let r = call(&app, Method::GET, &format!("/Groups/{gid}"), None).await;
    assert!(r.body.get("members").is_none(), "{}", r.body);
    let r = call(&app, Method::GET, &format!("/Users/{uid}"), None).await;
    assert_eq!(
        (r.body["active"].clone(), r.body["meta"]["version"].clone()),
        (json!(true), json!("W/\"1\""))
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_membership_patches_lose_no_update() {
    let app = app_with(None, None).await;
    let gid = post(&app, "/Groups", json!({"displayName": "Busy"})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut uids = Vec::new();
    for i in 0..12 {
        let r = post(&app, "/Users", json!({"userName": format!("c{i}@example.com")})).await;
        uids.push(r.body["id"].as_str().unwrap().to_string());
    }
    let app = std::sync::Arc::new(app);
    let tasks: Vec<_> = uids
        .iter()
        .map(|uid| {
            let (app, gid, uid) = (app.clone(), gid.clone(), uid.clone());
            tokio::spawn(async move {
                patch(
                    &app,
                    &format!("/Groups/{gid}"),
                    json!([{"op": "add", "path": "members", "value": [{"value": uid}]}]),
                )
                .await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let r = call(&app, Method::GET, &format!("/Groups/{gid}"), None).await;
    let members: BTreeSet<&str> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(members, uids.iter().map(String::as_str).collect::<BTreeSet<_>>());
    assert_eq!(r.body["meta"]["version"], format!("W/\"{}\"", 1 + uids.len()));
    settled(&app).await;
}

#[tokio::test]
async fn without_a_token_configured_scim_answers_503() {
    let app = spawn_app(Options::default()).await;
    let r = call(&app, Method::GET, "/Users", None).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["schemas"], json!([ERROR]));
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("GATEHOUSE_SCIM_TOKEN")
    );
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Fixture replay

/// Fixture ids (users and groups the exchange refers to) → ids this server assigned.
#[derive(Default)]
struct Ids(BTreeMap<String, String>);

impl Ids {
    fn map(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (from, to) in &self.0 {
            out = out.replace(from, to);
        }
        out
    }
    fn map_value(&self, v: &Value) -> Value {
        serde_json::from_str(&self.map(&v.to_string())).unwrap()
    }
}

fn strip_server_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["id", "meta", "schemas", "groups", "password"] {
            o.remove(k);
        }
    }
    v
}

/// Users and groups a fixture's request refers to, created so the exchange has something to act on.
async fn seed_for(app: &TestApp, fx: &Value, ids: &mut Ids) {
    let req = &fx["request"];
    let resp = &fx["response"];
    let path = req["path"].as_str().unwrap().trim_start_matches("/scim/v2");
    let status = resp["status"].as_u64();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body_text = req["body"].to_string();
    // Members the request removes must be there first; members it adds must exist as users.
    let mut member_ids: BTreeSet<String> = BTreeSet::new();
    let mut removed: BTreeSet<String> = BTreeSet::new();
    for op in req["body"]["Operations"].as_array().into_iter().flatten() {
        let op_name = op["op"].as_str().unwrap_or("").to_ascii_lowercase();
        let p = op["path"].as_str().unwrap_or("");
        if let Some(rest) = p.strip_prefix("members[value eq \"") {
            let id = rest.trim_end_matches("\"]").to_string();
            member_ids.insert(id.clone());
            removed.insert(id);
        }
        if p == "members" {
            for m in op["value"].as_array().into_iter().flatten() {
                let id = m["value"].as_str().unwrap().to_string();
                member_ids.insert(id.clone());
                if op_name == "remove" {
                    removed.insert(id);
                }
            }
        }
    }
    for m in req["body"]["members"].as_array().into_iter().flatten() {
        member_ids.insert(m["value"].as_str().unwrap().to_string());
    }
    let response_members: Vec<String> = resp["body"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect();
    member_ids.extend(response_members.iter().cloned());
    for (i, m) in member_ids.iter().enumerate() {
        let r = post(
            app,
            "/Users",
            json!({"userName": format!("member{i}@fixtures.test"), "emails": [{"value": format!("member{i}@fixtures.test")}]}),
        )
        .await;
        ids.0
            .insert(m.clone(), r.body["id"].as_str().unwrap().to_string());
    }

    let collection = segments[0];
    let target_id = segments.get(1).copied();
    match (collection, target_id, req["method"].as_str().unwrap()) {
        ("Users", None, "POST") if status == Some(409) => {
            post(app, "/Users", req["body"].clone()).await;
        }
        ("Users" | "Groups", None, "GET") if resp["body"]["totalResults"].as_u64().unwrap_or(0) > 0 => {
            for r in resp["body"]["Resources"].as_array().unwrap() {
                let mut seed = strip_server_fields(r);
                // The documented response may disagree with its own filter (Okta's shows
                // "Test SCIMv1" for displayName eq "Test SCIMv2"): the filter wins.
                if let Some((attr, value)) = equality_filter(req) {
                    seed[attr] = json!(value);
                }
                post(app, &format!("/{collection}"), seed).await;
            }
        }
        ("Users", Some(id), _) if status != Some(404) => {
            // The user as the fixture shows it (before the change), active.
            let shown = [&fx["preflight"]["response"]["body"], &resp["body"], &req["body"]]
                .into_iter()
                .find(|b| b.get("userName").is_some())
                .cloned()
                .unwrap_or_else(|| json!({"userName": "fixture.user@fixtures.test"}));
            let mut seed = strip_server_fields(&shown);
            seed["active"] = json!(true);
            let r = post(app, "/Users", seed).await;
            ids.0
                .insert(id.to_string(), r.body["id"].as_str().unwrap().to_string());
        }
        ("Groups", Some(id), _) => {
            let name = resp["body"]["displayName"]
                .as_str()
                .unwrap_or("Fixture Group")
                .to_string();
            // Members shown in the response that the request does not add, plus those it removes.
            let added: BTreeSet<String> = member_ids.difference(&removed).cloned().collect();
            let mut members: BTreeSet<String> = removed.clone();
            if req["method"] == "GET" {
                members.extend(response_members.iter().cloned());
            } else {
                members.extend(response_members.iter().filter(|m| !added.contains(*m)).cloned());
            }
            let members: Vec<Value> = members.iter().map(|m| json!({"value": ids.map(m)})).collect();
            let mut seed = json!({"displayName": name, "members": members});
            if let Some(x) = resp["body"]["externalId"].as_str() {
                seed["externalId"] = json!(x);
            }
            let r = post(app, "/Groups", seed).await;
            ids.0
                .insert(id.to_string(), r.body["id"].as_str().unwrap().to_string());
        }
        _ => {}
    }
    let _ = body_text;
}

/// `attr eq "value"` from the request's filter, if that is what it is.
fn equality_filter(req: &Value) -> Option<(String, String)> {
    let f = req["query"]["filter"].as_str()?;
    let (attr, rest) = f.split_once(" eq ")?;
    let value = rest.trim().strip_prefix('"')?.strip_suffix('"')?;
    Some((attr.trim().to_string(), value.to_string()))
}

/// `expected` ⊆ `actual` for the attributes that matter (server-generated ones skipped).
fn assert_resource_matches(what: &str, expected: &Value, actual: &Value, only: Option<&Value>) {
    let expected = strip_server_fields(expected);
    let Some(fields) = expected.as_object() else {
        return;
    };
    for (k, v) in fields {
        if let Some(only) = only
            && only.get(k).is_none()
        {
            continue; // an attribute the documented server made up (e.g. userType)
        }
        let got = &actual[k];
        match (k.as_str(), v) {
            ("members", Value::Null) => {}
            ("members", Value::Array(want)) => {
                let want: BTreeSet<&str> = want.iter().filter_map(|m| m["value"].as_str()).collect();
                let got: BTreeSet<&str> = got
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["value"].as_str())
                    .collect();
                assert_eq!(got, want, "{what}: members");
            }
            (_, Value::Array(a)) if a.is_empty() => {
                assert!(got.is_null() || got == &json!([]), "{what}: {k}: {got}");
            }
            _ => assert_eq!(got, v, "{what}: {k}"),
        }
    }
}

async fn replay(file: &str) {
    let fx: Value =
        serde_json::from_slice(&std::fs::read(fixtures_dir().join("scim").join(file)).unwrap()).unwrap();
    let app = app_with(None, None).await;
    let mut ids = Ids::default();
    seed_for(&app, &fx, &mut ids).await;
    let req = &fx["request"];
    let resp = &fx["response"];
    let client = fx["client"].as_str().unwrap();
    let method = Method::from_bytes(req["method"].as_str().unwrap().as_bytes()).unwrap();
    // Entra documents decoded query strings: encode spaces and quotes as a client would.
    let target = ids.map(req["target"].as_str().unwrap());
    let target = target.replace(' ', "%20").replace('"', "%22");
    let path = target.trim_start_matches("/scim/v2").to_string();
    let body = (!req["body"].is_null()).then(|| ids.map_value(&req["body"]));
    let token = if client == "okta" { TOKEN } else { OTHER_TOKEN };
    let r = call_with(&app, Some(token), method.clone(), &path, body.as_ref()).await;

    let expected_status = resp["status"].as_u64().map(|s| s as u16);
    let is_group_patch = method == Method::PATCH && path.starts_with("/Groups/");
    let lookup_404 = file == "okta.users.lookup-by-username.404.json";
    match expected_status {
        // RFC 7644 §3.4.2: a query matching nothing is 200 with totalResults 0 — the fixture is
        // the documented alternative (404), which Okta treats the same.
        Some(404) if lookup_404 => {
            assert_eq!(
                (r.status, r.body["totalResults"].clone()),
                (200, json!(0)),
                "{file}"
            );
            app.stop().await;
            return;
        }
        // Group PATCH answers 204 (Okta's doc: "the server may answer 204").
        Some(200) if is_group_patch => assert_eq!(r.status, 204, "{file}: {}", r.body),
        Some(s) => assert_eq!(r.status, s, "{file}: {}", r.body),
        // Undocumented response (Entra compat examples, Okta lists and replace): any success.
        None => assert!((200..300).contains(&r.status), "{file}: {} {}", r.status, r.body),
    }
    if r.status != 204 && r.status != 200 && r.status != 201 {
        // Errors: the SCIM error schema, status as a string.
        assert_eq!(r.body["schemas"], json!([ERROR]), "{file}");
        assert_eq!(r.body["status"], r.status.to_string(), "{file}");
        if r.status == 409 {
            assert_eq!(r.body["scimType"], "uniqueness", "{file}");
        }
        app.stop().await;
        return;
    }
    if !r.body.is_null() {
        assert_eq!(r.header("content-type"), Some("application/scim+json"), "{file}");
    }
    if method == Method::PATCH {
        check_patch_effect(&app, token, file, &path, req, &ids).await;
    }
    // A 204 group PATCH: compare the group as it is now instead.
    let actual = if r.status == 204 && is_group_patch {
        call_with(&app, Some(token), Method::GET, &path, None).await.body
    } else {
        r.body.clone()
    };
    let mut expected = ids.map_value(&resp["body"]);
    // Okta's group examples answer "Test SCIMv20" to a request that sets "Test SCIMv2": the
    // displayName the request sets wins over the documented echo.
    let set_name = req["body"]["displayName"].as_str().or_else(|| {
        req["body"]["Operations"]
            .as_array()?
            .iter()
            .find_map(|op| op["value"]["displayName"].as_str())
    });
    if let (Some(name), Some(o)) = (set_name, expected.as_object_mut())
        && o.contains_key("displayName")
    {
        o.insert("displayName".into(), json!(name));
    }
    if expected.is_null() || actual.is_null() {
        app.stop().await;
        return;
    }
    if expected["schemas"][0] == "urn:ietf:params:scim:api:messages:2.0:ListResponse" {
        assert_eq!(actual["totalResults"], expected["totalResults"], "{file}");
        assert_eq!(actual["startIndex"], 1, "{file}");
        let want = expected["Resources"].as_array().unwrap();
        let got = actual["Resources"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{file}");
        let filtered = equality_filter(req);
        for (w, g) in want.iter().zip(got) {
            if let Some((attr, value)) = &filtered {
                assert_eq!(g[attr.as_str()], json!(value), "{file}: {attr}");
            }
            for k in ["userName", "displayName", "externalId", "active"] {
                if filtered.as_ref().is_some_and(|(a, _)| a == k) {
                    continue;
                }
                if let Some(v) = w.get(k) {
                    assert_eq!(&g[k], v, "{file}: {k}");
                }
            }
        }
    } else {
        let only = (method == Method::POST || method == Method::PUT).then(|| &req["body"]);
        assert_resource_matches(file, &expected, &actual, only);
        assert!(actual["id"].is_string(), "{file}");
        assert_eq!(actual["schemas"][0], expected["schemas"][0], "{file}");
        assert!(actual["meta"]["version"].is_string(), "{file}");
    }
    if target.contains("excludedAttributes=members") {
        let resources = actual["Resources"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![actual.clone()]);
        assert!(resources.iter().all(|g| g.get("members").is_none()), "{file}");
    }
    app.stop().await;
}

/// What a PATCH must have done, read back with GET: members added/removed, `active` set
/// (Entra's legacy strings included), simple attributes replaced.
async fn check_patch_effect(app: &TestApp, token: &str, file: &str, path: &str, req: &Value, ids: &Ids) {
    let now = call_with(app, Some(token), Method::GET, path, None).await.body;
    let members: BTreeSet<String> = now["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["value"].as_str().map(str::to_string))
        .collect();
    for op in req["body"]["Operations"].as_array().into_iter().flatten() {
        let name = op["op"].as_str().unwrap().to_ascii_lowercase();
        let p = op["path"].as_str().unwrap_or("");
        let value = &op["value"];
        if let Some(rest) = p.strip_prefix("members[value eq \"") {
            let id = ids.map(rest.trim_end_matches("\"]"));
            assert!(!members.contains(&id), "{file}: {id} still a member");
        } else if p == "members" {
            for m in value.as_array().into_iter().flatten() {
                let id = ids.map(m["value"].as_str().unwrap());
                assert_eq!(members.contains(&id), name != "remove", "{file}: member {id}");
            }
        } else if p == "active" || value.get("active").is_some() {
            let v = if p == "active" { value } else { &value["active"] };
            let want = v
                .as_bool()
                .unwrap_or_else(|| v.as_str().unwrap().eq_ignore_ascii_case("true"));
            assert_eq!(now["active"], json!(want), "{file}: active");
        } else if !p.is_empty() && !p.contains(['.', '[', ':']) {
            assert_eq!(&now[p], value, "{file}: {p}");
        } else if p == "emails[type eq \"work\"].value" {
            let work = now["emails"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["type"] == "work")
                .unwrap();
            assert_eq!(&work["value"], value, "{file}: work email");
        }
    }
}

#[tokio::test]
async fn every_fixture_exchange_replays() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(fixtures_dir().join("scim/manifest.json")).unwrap()).unwrap();
    let files: Vec<&str> = manifest
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["file"].as_str().unwrap())
        .collect();
    assert!(files.len() >= 40, "manifest lists {} files", files.len());
    for file in files {
        replay(file).await;
    }
}

/// Issue 11, finding 3: one SCIM token could name any group. A rule that requires Okta as the
/// source grants nothing for a SCIM-sourced membership of the same group (the SCIM-sourced rule
/// shows the membership itself arrived), and a person outside the allowed email domains is not
/// onboarded at all.
#[tokio::test]
async fn a_scim_claim_of_a_group_reserved_to_okta_grants_nothing() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let policy = "[[rule]]\nname = \"admins\"\nwhen = { idp_group = \"Admins\", source = \"okta\" }\n\
                  looker_groups = [\"Engineers\"]\nlooker_roles = [\"Developer\"]\n\
                  [[rule]]\nname = \"admins-seen-by-scim\"\nwhen = { idp_group = \"Admins\", source = [\"scim\"] }\n\
                  looker_groups = [\"Finance Analysts\"]\n";
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(policy.into()),
        extra_toml: format!(
            "{}[identity]\nallowed_email_domains = [\"example.com\"]\n",
            scim_toml()
        ),
        ..Default::default()
    })
    .await;
    let eve = post(
        &app,
        "/Users",
        user_body("eve@example.com", "eve@example.com", "Eve", "Ill"),
    )
    .await;
    let mallory = post(
        &app,
        "/Users",
        user_body("mallory@evil.test", "mallory@evil.test", "Mal", "Lory"),
    )
    .await;
    let members: Vec<Value> = [&eve, &mallory]
        .iter()
        .map(|u| json!({"value": u.body["id"]}))
        .collect();
    post(
        &app,
        "/Groups",
        json!({"schemas": [GROUP], "displayName": "Admins", "members": members}),
    )
    .await;
    settled(&app).await;
    let u = fake.user_by_email("eve@example.com").expect("eve is onboarded");
    assert_eq!(
        u.group_ids,
        set(&[&c.finance]),
        "only the scim-sourced rule applies"
    );
    assert!(!u.direct_role_ids.contains(&c.developer), "{u:?}");
    assert!(
        fake.user_by_email("mallory@evil.test").is_none(),
        "a domain outside identity.allowed_email_domains is never onboarded"
    );
    app.stop().await;
}

/// RFC 7644 §3.4.3: `POST /.search` on /Users, /Groups and the root takes the query in a
/// SearchRequest body and answers exactly what the same GET answers (scim2-tester checks it).
#[tokio::test]
async fn post_search_answers_what_the_same_get_answers() {
    const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
    let app = app_with(None, None).await;
    for (name, dept) in [
        ("alice@example.com", "Eng"),
        ("bob@example.com", "Eng"),
        ("carol@other.org", "Ops"),
    ] {
        let mut b = user_body(name, name, "X", "Y");
        b[ENTERPRISE]["department"] = json!(dept);
        post(&app, "/Users", b).await;
    }
    post(
        &app,
        "/Groups",
        json!({"schemas": [GROUP], "displayName": "Engineering"}),
    )
    .await;
    let search = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            let r = call(app, Method::POST, path, Some(&body)).await;
            assert_eq!(r.status, 200, "POST {path} {body}: {}", r.body);
            r
        }
    };
    let enc = |s: &str| s.replace(' ', "%20").replace('"', "%22");

    // Filter, paging and projection mean the same in the body as in the URL.
    let filter = format!("{ENTERPRISE}:department eq \"eng\"");
    let body = json!({
        "schemas": [SEARCH],
        "filter": filter,
        "startIndex": 2,
        "count": 1,
        "attributes": ["userName"],
    });
    let posted = search("/Users/.search", body).await;
    let got = call(
        &app,
        Method::GET,
        &format!(
            "/Users?filter={}&startIndex=2&count=1&attributes=userName",
            enc(&filter)
        ),
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(posted.body, got.body);
    assert_eq!(posted.body["totalResults"], 2);
    assert_eq!(posted.body["Resources"][0]["userName"], "bob@example.com");
    assert!(
        posted.body["Resources"][0].get("emails").is_none(),
        "{}",
        posted.body
    );

    // excludedAttributes, member names in any case, no schemas member.
    let r = search(
        "/Users/.search",
        json!({"FILTER": "userName sw \"carol\"", "excludedAttributes": ["emails", ENTERPRISE]}),
    )
    .await;
    assert_eq!(r.body["totalResults"], 1);
    let carol = &r.body["Resources"][0];
    assert_eq!(carol["userName"], "carol@other.org");
    assert!(
        carol.get("emails").is_none() && carol.get(ENTERPRISE).is_none(),
        "{carol}"
    );
    assert!(carol.get("name").is_some(), "{carol}");

    let r = search(
        "/Groups/.search",
        json!({"schemas": [SEARCH], "filter": "displayName eq \"engineering\""}),
    )
    .await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["displayName"], "Engineering");

    // At the root: every resource type, Users then Groups.
    let r = search("/.search", json!({"schemas": [SEARCH]})).await;
    assert_eq!(r.body["totalResults"], 4);
    let kinds: Vec<&str> = r.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["meta"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["User", "User", "User", "Group"]);
    let r = search(
        "/.search",
        json!({"filter": "displayName eq \"Engineering\"", "attributes": "displayName"}),
    )
    .await;
    assert_eq!(r.body["totalResults"], 1);
    assert_eq!(r.body["Resources"][0]["schemas"], json!([GROUP]));

    // Bad bodies are refused with the SCIM error types, like bad query strings.
    for (body, scim_type) in [
        (json!({"filter": "userName eq"}), "invalidFilter"),
        (json!({"filter": 3}), "invalidFilter"),
        (json!({"count": "ten"}), "invalidValue"),
        (json!({"attributes": [1]}), "invalidValue"),
        (json!({"schemas": [PATCH_OP]}), "invalidSyntax"),
        (json!(["userName"]), "invalidSyntax"),
    ] {
        let r = call(&app, Method::POST, "/Users/.search", Some(&body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.body["scimType"], scim_type, "{body}: {}", r.body);
    }
    // Without a token, nothing.
    let r = call_with(&app, None, Method::POST, "/.search", Some(&json!({}))).await;
    assert_eq!(r.status, 401);
}

/// PATCH with `path` = the enterprise extension's URN: the extension as one complex attribute.
#[tokio::test]
async fn patch_of_the_whole_enterprise_extension_over_http() {
    let app = app_with(None, None).await;
    let mut b = user_body("dora@example.com", "dora@example.com", "D", "E");
    b[ENTERPRISE] = json!({"department": "Eng", "costCenter": "C1"});
    let id = post(&app, "/Users", b).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/Users/{id}");

    let r = patch(
        &app,
        &path,
        json!([{"op": "replace", "path": ENTERPRISE, "value": {"department": "Ops", "employeeNumber": "7"}}]),
    )
    .await;
    let got = call(&app, Method::GET, &path, None).await;
    assert_eq!(
        got.body[ENTERPRISE],
        json!({"department": "Ops", "costCenter": "C1", "employeeNumber": "7"}),
        "{}",
        r.body
    );
    assert!(
        got.body["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!(ENTERPRISE))
    );

    patch(&app, &path, json!([{"op": "remove", "path": ENTERPRISE}])).await;
    let got = call(&app, Method::GET, &path, None).await;
    assert!(got.body.get(ENTERPRISE).is_none(), "{}", got.body);
    assert_eq!(got.body["schemas"], json!([USER]));

    patch(
        &app,
        &path,
        json!([{"op": "add", "path": ENTERPRISE, "value": {"division": "North"}}]),
    )
    .await;
    let got = call(&app, Method::GET, &path, None).await;
    assert_eq!(got.body[ENTERPRISE], json!({"division": "North"}));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Issue 16: a rename over SCIM follows the person's Looker user; no second user.

fn looker_ids(fake: &FakeLooker) -> BTreeSet<String> {
    fake.users().into_iter().map(|u| u.id).collect()
}

/// Okta's SCIM client renames with a full `PUT` (`userName` and `emails`) and deactivates with
/// `PATCH active=false`.
#[tokio::test]
async fn an_okta_scim_rename_follows_the_linked_looker_user_and_deactivation_closes_it() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let lid = fake.add_user("jane.doe@example.com", "Jane", "Doe");
    let app = app_with(Some(fake.clone()), Some(example_policy())).await;
    let r = post(
        &app,
        "/Users",
        user_body("jane.doe@example.com", "jane.doe@example.com", "Jane", "Doe"),
    )
    .await;
    let sid = r.body["id"].as_str().unwrap().to_string();
    settled(&app).await;
    let before = looker_ids(&fake);
    let mut renamed = user_body("jane.d@example.com", "jane.d@example.com", "Jane", "D");
    renamed["id"] = json!(sid);
    let r = call(&app, Method::PUT, &format!("/Users/{sid}"), Some(&renamed)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    settled(&app).await;
    assert_eq!(looker_ids(&fake), before, "no second looker user");
    assert_eq!(
        fake.user(&lid).unwrap().email.as_deref(),
        Some("jane.d@example.com")
    );
    patch(
        &app,
        &format!("/Users/{sid}"),
        json!([{"op": "replace", "value": {"active": false}}]),
    )
    .await;
    settled(&app).await;
    assert!(
        fake.user(&lid).unwrap().is_disabled,
        "the original user is offboarded"
    );
    assert_eq!(looker_ids(&fake), before);
    app.stop().await;
}

/// Entra renames with `PATCH Replace userName` and `emails[type eq "work"].value` (the
/// handbook's fixtures' shapes) and disables with `Replace active`.
#[tokio::test]
async fn an_entra_scim_rename_follows_the_linked_looker_user_and_disable_closes_it() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let lid = fake.add_user("grace@example.com", "Grace", "Hopper");
    let app = app_with(Some(fake.clone()), Some(example_policy())).await;
    let mut body = user_body("grace@example.com", "grace@example.com", "Grace", "Hopper");
    body["externalId"] = json!("0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef");
    let r = call_with(&app, Some(OTHER_TOKEN), Method::POST, "/Users", Some(&body)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let sid = r.body["id"].as_str().unwrap().to_string();
    settled(&app).await;
    let before = looker_ids(&fake);
    let entra_patch = |ops: Value| {
        let app = &app;
        let path = format!("/Users/{sid}");
        async move {
            let body = json!({ "schemas": [PATCH_OP], "Operations": ops });
            let r = call_with(app, Some(OTHER_TOKEN), Method::PATCH, &path, Some(&body)).await;
            assert!(r.status == 200 || r.status == 204, "{} {}", r.status, r.body);
        }
    };
    entra_patch(json!([
        {"op": "Replace", "path": "userName", "value": "grace.h@example.com"},
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "grace.h@example.com"},
    ]))
    .await;
    settled(&app).await;
    assert_eq!(looker_ids(&fake), before, "no second looker user");
    assert_eq!(
        fake.user(&lid).unwrap().email.as_deref(),
        Some("grace.h@example.com")
    );
    entra_patch(json!([{"op": "Replace", "path": "active", "value": "False"}])).await;
    settled(&app).await;
    assert!(
        fake.user(&lid).unwrap().is_disabled,
        "the original user is offboarded"
    );
    assert_eq!(looker_ids(&fake), before);
    app.stop().await;
}
