//! Issue 16 for Google Workspace: `RENAME_USER` is an email change of the person, not a new
//! person. The Reports API names users by address only (an admin event's `actor.profileId` is the
//! admin's), so the intake remembers the new address and publishes its later events under the
//! person's subject: CREATE_USER links the Looker user, RENAME_USER renames that user (none
//! created), SUSPEND_USER about the new address offboards that original user.

use gatehouse_domain::ports::StateStore;
use gatehouse_e2e::{Options, TestApp, fixtures_dir, spawn_app};
use gatehouse_testkit::FakeLooker;
use serde_json::Value;

const TOKEN: &str = "245t1234tt83trrt333";
const OLD: &str = "liz@example.com";
const NEW: &str = "liz.lemon@example.com";

/// A google-workspace exchange `{method, url, headers, body}`: the handbook's, or this
/// repository's own (`tests/fixtures`, with its SOURCES).
fn exchange(dir: std::path::PathBuf, name: &str) -> Value {
    let p = dir.join("google-workspace").join(name);
    let text = std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", p.display()));
    serde_json::from_slice(&text).unwrap()
}

fn own_fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The documented CREATE_USER notification as `event` about `email` at `time`.
fn documented(event: &str, email: &str, time: &str, qualifier: &str) -> Value {
    let mut ex = exchange(fixtures_dir(), "reports.push.admin.CREATE_USER.docs.json");
    ex["body"]["events"][0]["name"] = event.into();
    ex["body"]["events"][0]["parameters"][0]["value"] = email.into();
    ex["body"]["id"]["time"] = time.into();
    ex["body"]["id"]["uniqueQualifier"] = qualifier.into();
    ex["headers"]["X-Goog-Resource-State"] = event.into();
    ex
}

async fn post(app: &TestApp, ex: &Value) {
    let mut req = app
        .http
        .post(format!("{}/hooks/google", app.base))
        .body(serde_json::to_vec(&ex["body"]).unwrap());
    for (k, v) in ex["headers"].as_object().unwrap() {
        if !k.eq_ignore_ascii_case("content-length") {
            req = req.header(k.as_str(), v.as_str().unwrap());
        }
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 200, "{}", r.text().await.unwrap_or_default());
    app.drained().await;
}

fn ids(fake: &FakeLooker) -> Vec<String> {
    let mut v: Vec<String> = fake.users().into_iter().map(|u| u.id).collect();
    v.sort();
    v
}

#[tokio::test]
async fn google_rename_user_renames_the_linked_looker_user_and_suspend_closes_it() {
    let fake = FakeLooker::start().await;
    let uid = fake.add_user(OLD, "Liz", "Lemon");
    for _ in 0..2 {
        fake.add_session(&uid);
        fake.add_api3_key(&uid);
    }
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        extra_toml: format!("[google]\nchannel_tokens = [{TOKEN:?}]\nmax_body_bytes = 65536\n"),
        ..Default::default()
    })
    .await;
    let before = ids(&fake);
    let person = format!("google:{OLD}");

    post(
        &app,
        &documented("CREATE_USER", OLD, "2013-09-10T18:23:35.808Z", "-1"),
    )
    .await;
    assert_eq!(
        app.store.account_links("looker", &person).await.unwrap(),
        vec![uid.clone()],
        "the person is linked to the user their address found"
    );

    let rename = exchange(own_fixtures(), "reports.push.admin.RENAME_USER.constructed.json");
    assert_eq!(rename["body"]["events"][0]["parameters"][1]["value"], NEW);
    post(&app, &rename).await;
    assert_eq!(ids(&fake), before, "no second looker user for the new address");
    assert_eq!(
        fake.user(&uid).unwrap().email.as_deref(),
        Some(NEW),
        "the linked user's email follows the rename"
    );
    let s = app.store.load_subject(&person).await.unwrap().unwrap();
    assert_eq!(s.identity.email(), Some(NEW));
    assert_eq!(
        s.identity.previous_emails,
        vec![OLD.to_string()],
        "the old address is kept"
    );

    // Google names the person by the new address from now on.
    post(
        &app,
        &documented("SUSPEND_USER", NEW, "2013-09-12T08:00:00.000Z", "-3"),
    )
    .await;
    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled, "the original user is offboarded");
    assert!(
        u.session_ids.is_empty() && u.api3_key_ids.is_empty(),
        "sessions and keys revoked: {u:?}"
    );
    assert_eq!(ids(&fake), before, "still no second user");
    let s = app.store.load_subject(&person).await.unwrap().unwrap();
    assert!(
        s.identity.status.is_offboarded(),
        "the suspension is the same person's, not a new person's: {:?}",
        s.identity.status
    );
    assert!(
        app.store
            .load_subject(&format!("google:{NEW}"))
            .await
            .unwrap()
            .is_none(),
        "no second person for the new address"
    );
    app.stop().await;
}
