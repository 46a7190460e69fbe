//! Issue 14, item 6: the Looker calls of an Okta/Entra-style SCIM lifecycle, counted against the
//! fake Looker. Create, two PATCHes Looker does not care about, a group add, the adoption of a
//! Looker user that already existed, deactivate, the same deactivation again, reactivate,
//! delete. Every call counts (login and catalog included) from the first SCIM request on; the
//! per-step counts are printed (`cargo test ... -- --nocapture`).

use gatehouse_e2e::{Options, TestApp, seed_catalog, spawn_app, wait_until};
use gatehouse_testkit::FakeLooker;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const TOKEN: &str = "scim-floor-token-0123456789";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Issue 14 asked for 16 with groups, roles and attributes managed. This lifecycle's writes
/// alone are 13 (create + deny value; group + roles + attribute; the adopted user's deny value;
/// disable + session + group; enable + group; disable + group), so the floor is what the reads
/// below allow: the catalog once (3 kinds), Gatehouse's own user once (the safety screen), one
/// read per event that plans, and an attribute read only where no converged state vouches for
/// the values (the adopted user, the reactivation). 31 before issue 14.
const FLOOR_ALL_KINDS: usize = 25;
/// Groups only: 5 writes, the group list, Gatehouse's own user, login, one read per event. 22
/// before issue 14.
const FLOOR_GROUPS_ONLY: usize = 18;

/// One rule granting one Looker group, one role and one attribute to the IdP's Engineering
/// group; the attribute fails closed for everyone else.
const POLICY_ALL_KINDS: &str = r#"
[onboarding]
create_users = true
[offboarding]
disable = true
revoke_sessions = true
revoke_api_keys = true
remove_managed_groups = true
delete_after_days = 30
handover = "none"

[[rule]]
name = "engineering"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers"]
looker_roles = ["Developer"]
looker_attributes = { team = "engineering" }

[attributes.team]
deny_value = "__none__"
"#;

fn groups_only_policy() -> String {
    POLICY_ALL_KINDS
        .replace("looker_roles = [\"Developer\"]\n", "")
        .replace("looker_attributes = { team = \"engineering\" }\n", "")
        .replace("[attributes.team]\ndeny_value = \"__none__\"\n", "")
}

async fn app(fake: &FakeLooker, policy: &str) -> TestApp {
    spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(policy.to_string()),
        extra_toml: format!(
            "[scim]\nrelay_interval = \"20ms\"\n[[scim.tokens]]\nname = \"idp\"\ntoken = \"{TOKEN}\"\n"
        ),
        ..Default::default()
    })
    .await
}

async fn scim(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let mut req = app
        .http
        .request(method.clone(), format!("{}/scim/v2{path}", app.base))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

async fn patch(app: &TestApp, path: &str, ops: Value) {
    let body = json!({ "schemas": [PATCH_OP], "Operations": ops });
    scim(app, Method::PATCH, path, Some(body)).await;
}

fn user_body(email: &str, given: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": email,
        "name": {"givenName": given, "familyName": "Floor"},
        "emails": [{"primary": true, "value": email, "type": "work"}],
        "active": true,
    })
}

async fn settled(app: &TestApp) {
    let store = app.store.clone();
    wait_until("scim outbox relayed", || {
        let s = store.clone();
        async move { s.scim_outbox_depth().await.unwrap() == 0 }
    })
    .await;
    app.drained().await;
}

/// What the lifecycle left in Looker, checked so that a bound met by doing nothing fails.
struct Ids {
    engineers: String,
    developer: String,
    team: String,
}

/// One step's calls: `(route, is_write)`.
type Step = (String, Vec<(String, bool)>);

/// Runs the lifecycle; returns the calls of each step.
async fn lifecycle(fake: &FakeLooker, app: &TestApp, ids: &Ids, all_kinds: bool) -> Vec<Step> {
    // A Looker user created by hand before Gatehouse knew the person: adopted, not duplicated.
    let hand_made = fake.add_user("grace@example.com", "Grace", "Floor");
    fake.add_session(&hand_made);
    let mut steps: Vec<Step> = Vec::new();
    let mut mark = fake.calls().len();
    let mut step = |name: &str, fake: &FakeLooker| {
        let calls = fake.calls();
        let routes = calls[mark..]
            .iter()
            .map(|c| (format!("{} {}", c.method, c.path), c.is_write))
            .collect();
        mark = calls.len();
        steps.push((name.to_string(), routes));
    };

    let ada = scim(
        app,
        Method::POST,
        "/Users",
        Some(user_body("ada@example.com", "Ada")),
    )
    .await;
    let ada = ada["id"].as_str().unwrap().to_string();
    settled(app).await;
    step("create", fake);

    patch(
        app,
        &format!("/Users/{ada}"),
        json!([{"op": "add", "path": "nickName", "value": "Countess"}]),
    )
    .await;
    patch(
        app,
        &format!("/Users/{ada}"),
        json!([{"op": "replace", "path": "name.givenName", "value": "Ada"}]),
    )
    .await;
    settled(app).await;
    step("two no-op patches", fake);

    let group = scim(
        app,
        Method::POST,
        "/Groups",
        Some(json!({"schemas": [GROUP], "displayName": "Engineering", "members": []})),
    )
    .await;
    let gid = group["id"].as_str().unwrap().to_string();
    patch(
        app,
        &format!("/Groups/{gid}"),
        json!([{"op": "add", "path": "members", "value": [{"value": ada}]}]),
    )
    .await;
    settled(app).await;
    step("group add", fake);
    let looker_ada = fake.user_by_email("ada@example.com").expect("created");
    assert!(looker_ada.group_ids.contains(&ids.engineers), "{looker_ada:?}");
    if all_kinds {
        assert!(
            looker_ada.direct_role_ids.contains(&ids.developer),
            "{looker_ada:?}"
        );
        assert_eq!(
            looker_ada.attribute_values.get(&ids.team).map(String::as_str),
            Some("engineering")
        );
    }

    scim(
        app,
        Method::POST,
        "/Users",
        Some(user_body("grace@example.com", "Grace")),
    )
    .await;
    settled(app).await;
    step("adopt an existing looker user", fake);
    let grace = fake.user(&hand_made).unwrap();
    assert!(!grace.is_disabled);
    if all_kinds {
        assert_eq!(
            grace.attribute_values.get(&ids.team).map(String::as_str),
            Some("__none__")
        );
    }
    let graces = fake
        .users()
        .into_iter()
        .filter(|u| u.email.as_deref() == Some("grace@example.com"))
        .count();
    assert_eq!(graces, 1, "adopted, not duplicated");

    // Deactivation revokes what the person holds by then.
    fake.add_session(&looker_ada.id);
    let deactivate = json!([{"op": "replace", "value": {"active": false}}]);
    patch(app, &format!("/Users/{ada}"), deactivate.clone()).await;
    settled(app).await;
    step("deactivate", fake);
    let u = fake.user(&looker_ada.id).unwrap();
    assert!(
        u.is_disabled && u.session_ids.is_empty() && !u.group_ids.contains(&ids.engineers),
        "{u:?}"
    );

    patch(app, &format!("/Users/{ada}"), deactivate).await;
    settled(app).await;
    step("repeated deactivate", fake);

    patch(
        app,
        &format!("/Users/{ada}"),
        json!([{"op": "replace", "value": {"active": true}}]),
    )
    .await;
    settled(app).await;
    step("reactivate", fake);
    let u = fake.user(&looker_ada.id).unwrap();
    assert!(!u.is_disabled && u.group_ids.contains(&ids.engineers), "{u:?}");
    if all_kinds {
        assert!(u.direct_role_ids.contains(&ids.developer), "{u:?}");
        assert_eq!(
            u.attribute_values.get(&ids.team).map(String::as_str),
            Some("engineering")
        );
    }

    scim(app, Method::DELETE, &format!("/Users/{ada}"), None).await;
    settled(app).await;
    step("delete", fake);
    let u = fake.user(&looker_ada.id).unwrap();
    assert!(u.is_disabled && !u.group_ids.contains(&ids.engineers), "{u:?}");
    steps
}

fn report(title: &str, steps: &[Step]) -> usize {
    let total: usize = steps.iter().map(|(_, c)| c.len()).sum();
    println!("{title}: {total} looker calls");
    for (name, calls) in steps {
        let writes = calls.iter().filter(|(_, w)| *w).count();
        let routes: Vec<&str> = calls.iter().map(|(r, _)| r.as_str()).collect();
        println!(
            "  {name:<30} {:>2} ({writes} writes)  {}",
            calls.len(),
            routes.join(", ")
        );
    }
    total
}

/// The reads of each step, at most: the catalog (`kinds` lists), login and Gatehouse's own user
/// once, then one read per event, plus the attribute read only where nothing vouches.
fn check_reads(steps: &[Step], kinds: usize, attributes: bool) {
    let attribute_read = usize::from(attributes);
    let budget = |name: &str| match name {
        "create" => kinds + 3,
        "two no-op patches" | "repeated deactivate" => 0,
        "adopt an existing looker user" | "reactivate" => 1 + attribute_read,
        _ => 1,
    };
    for (name, calls) in steps {
        let reads: Vec<&String> = calls.iter().filter(|(_, w)| !*w).map(|(r, _)| r).collect();
        assert!(
            reads.len() <= budget(name),
            "{name}: reads {reads:?} above {}",
            budget(name)
        );
        let roles: Vec<&&String> = reads
            .iter()
            .filter(|r| r.contains("/users/") && r.ends_with("/roles"))
            .collect();
        assert!(
            roles.is_empty(),
            "{name}: the search carries the roles: {roles:?}"
        );
    }
}

async fn run(policy: &str, all_kinds: bool) -> Vec<Step> {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let ids = Ids {
        engineers: c.engineers,
        developer: c.developer,
        team: c.team,
    };
    let app = app(&fake, policy).await;
    // The start's own reads (login, the managed attributes' settings) are not the lifecycle's:
    // counting starts at its first request.
    let steps = lifecycle(&fake, &app, &ids, all_kinds).await;
    app.stop().await;
    steps
}

#[tokio::test]
async fn a_scim_lifecycle_managing_groups_roles_and_attributes_stays_at_the_call_floor() {
    let steps = run(POLICY_ALL_KINDS, true).await;
    let total = report("groups, roles and attributes managed", &steps);
    check_reads(&steps, 3, true);
    assert!(
        total <= FLOOR_ALL_KINDS,
        "{total} looker calls > {FLOOR_ALL_KINDS}: {steps:#?}"
    );
}

#[tokio::test]
async fn a_scim_lifecycle_managing_groups_only_reads_no_role_or_attribute() {
    let steps = run(&groups_only_policy(), false).await;
    let total = report("groups only", &steps);
    let unneeded: BTreeSet<&String> = steps
        .iter()
        .flat_map(|(_, c)| c)
        .map(|(r, _)| r)
        .filter(|r| r.contains("/roles") || r.contains("attribute"))
        .collect();
    assert!(
        unneeded.is_empty(),
        "reads the policy does not need: {unneeded:?}"
    );
    check_reads(&steps, 1, false);
    assert!(
        total <= FLOOR_GROUPS_ONLY,
        "{total} looker calls > {FLOOR_GROUPS_ONLY}: {steps:#?}"
    );
}
