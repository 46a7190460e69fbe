//! SCIM user names and emails at the trust boundary: look-alike user names cannot squat an
//! existing one (NFKC), control characters never enter the directory (or the logs).

use gatehouse_e2e::{Options, TestApp, spawn_app};
use serde_json::{Value, json};

const TOKEN: &str = "scim-names-token-0123456789";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn app() -> TestApp {
    spawn_app(Options {
        extra_toml: format!("[scim]\n[[scim.tokens]]\nname = \"okta\"\ntoken = \"{TOKEN}\"\n"),
        ..Options::default()
    })
    .await
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
    let r = app
        .http
        .request(method, format!("{}/scim/v2{path}", app.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn user(user_name: &str, email: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": user_name,
        "emails": [{"primary": true, "value": email, "type": "work"}],
        "active": true,
    })
}

#[tokio::test]
async fn look_alike_user_names_are_refused_as_duplicates() {
    let app = app().await;
    let (s, _) = send(
        &app,
        reqwest::Method::POST,
        "/Users",
        &user("kate", "kate@example.com"),
    )
    .await;
    assert_eq!(s, 201);
    // Kelvin sign K (U+212A), full-width letters: NFKC makes them `kate`.
    for squat in ["\u{212A}ate", "\u{FF4B}\u{FF41}\u{FF54}\u{FF45}"] {
        let (s, body) = send(
            &app,
            reqwest::Method::POST,
            "/Users",
            &user(squat, "other@example.com"),
        )
        .await;
        assert_eq!(
            (s, body["scimType"].as_str()),
            (409, Some("uniqueness")),
            "{squat}: {body}"
        );
    }
    // Renaming another user to a look-alike is refused the same way.
    let (s, body) = send(
        &app,
        reqwest::Method::POST,
        "/Users",
        &user("mallory", "mallory@example.com"),
    )
    .await;
    assert_eq!(s, 201);
    let id = body["id"].as_str().unwrap();
    let ops = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "userName", "value": "\u{212A}ATE"}
    ]});
    let (s, body) = send(&app, reqwest::Method::PATCH, &format!("/Users/{id}"), &ops).await;
    assert_eq!(
        (s, body["scimType"].as_str()),
        (409, Some("uniqueness")),
        "{body}"
    );
    assert_eq!(app.store.scim_resource_count().await.unwrap(), 2);
    app.stop().await;
}

#[tokio::test]
async fn control_characters_in_emails_and_user_names_are_refused() {
    let app = app().await;
    for (name, email) in [
        (
            "eve",
            "eve\n2026-01-01T00:00:00Z INFO gatehouse: offboarded ceo@example.com",
        ),
        ("eve", "eve\u{1b}[2J@example.com"),
        ("eve", "eve@exam ple.com"),
        ("eve", "eve@@example.com"),
        ("eve\r\nINFO forged", "eve@example.com"),
        ("eve\u{202e}", "eve@example.com"),
    ] {
        let (s, body) = send(&app, reqwest::Method::POST, "/Users", &user(name, email)).await;
        assert_eq!(
            (s, body["scimType"].as_str()),
            (400, Some("invalidValue")),
            "{name:?} {email:?}: {body}"
        );
        assert!(
            !body.to_string().contains("forged"),
            "the error does not echo the value"
        );
    }
    // PATCH cannot smuggle one in either.
    let (s, body) = send(
        &app,
        reqwest::Method::POST,
        "/Users",
        &user("eve", "eve@example.com"),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    let ops = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "eve\u{7}@example.com"}
    ]});
    let (s, body) = send(&app, reqwest::Method::PATCH, &format!("/Users/{id}"), &ops).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(app.store.scim_resource_count().await.unwrap(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_okta_event_whose_user_email_has_a_control_character_is_refused() {
    let app = app().await;
    let mut body: Value = serde_json::from_slice(&gatehouse_e2e::okta_fixture(
        "event-hook.user.lifecycle.deactivate.constructed.json",
    ))
    .unwrap();
    body["data"]["events"][0]["target"][0]["alternateId"] =
        "john\n2026-01-01T00:00:00Z INFO forged@example.com".into();
    let r = app.post_okta(&serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status(), 400);
    let reply: Value = r.json().await.unwrap();
    assert_eq!(reply["error"], "invalid_email");
    assert!(!reply.to_string().contains("forged"), "{reply}");
    assert_eq!(app.store.queue_depth().await.unwrap(), 0, "nothing enqueued");
    app.stop().await;
}
