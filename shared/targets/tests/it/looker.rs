//! The Looker client against the stateful fake Looker (`gatehouse_testkit::FakeLooker`).

use gatehouse_domain::looker::{ErrorKind, LookerError, LookerOp, Named, ReadNeeds, UserRef};
use gatehouse_domain::ports::LookerPort;
use gatehouse_targets::client::looker::{CatalogKinds, LookerClient, LookerConfig, SEARCH_FIELDS};
use gatehouse_testkit::{FakeLooker, RecordedCall};
use secrecy::SecretString;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The client's settings for `fake` (catalog cached 60 s).
pub(crate) fn config(fake: &FakeLooker) -> LookerConfig {
    LookerConfig {
        base_url: fake.base_url(),
        client_id: fake.client_id().to_owned(),
        client_secret: SecretString::from(fake.client_secret().to_owned()),
        timeout: Duration::from_secs(5),
        catalog_ttl: Duration::from_secs(60),
        max_concurrent_calls: gatehouse_targets::client::looker::DEFAULT_MAX_CONCURRENT_CALLS,
    }
}

/// A Looker client of `fake` ([`config`]); the other Looker tests use it too.
pub(crate) fn client(fake: &FakeLooker) -> LookerClient {
    LookerClient::new(config(fake)).unwrap_or_else(|e| panic!("client: {e}"))
}

/// A fake and a client that has already logged in, with the call log cleared.
async fn warm() -> (FakeLooker, LookerClient) {
    let fake = FakeLooker::start().await;
    let c = client(&fake);
    find(&c, "nobody@x.com").await;
    fake.reset_calls();
    (fake, c)
}

async fn find(c: &LookerClient, email: &str) -> Option<gatehouse_domain::looker::LookerUser> {
    c.find_user(email, &ReadNeeds::default())
        .await
        .unwrap_or_else(|e| panic!("find_user: {e}"))
}

fn id(s: &str) -> UserRef {
    UserRef::Id(s.to_owned())
}

fn named(name: &str, id: &str) -> Named {
    Named {
        name: name.to_owned(),
        id: Some(id.to_owned()),
    }
}

fn expect_err<T: std::fmt::Debug>(r: Result<T, LookerError>) -> LookerError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

/// Executes `op` and checks that exactly one call reached the fake and that it is the call the
/// plan renders (method, path, JSON body), answered with a 2xx.
async fn exec(fake: &FakeLooker, c: &LookerClient, user: &UserRef, op: &LookerOp) -> Option<String> {
    fake.reset_calls();
    let out = c
        .execute(user, op)
        .await
        .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let want = op.http(user);
    let got = &calls[0];
    assert_eq!(got.method, want.method.to_string());
    assert_eq!(got.path, want.path);
    assert_eq!(got.json_body(), want.body);
    assert!(got.query.is_empty(), "{got:?}");
    assert!((200..300).contains(&got.status), "{got:?}");
    assert!(got.is_write);
    out
}

fn logins(calls: &[RecordedCall]) -> usize {
    calls.iter().filter(|c| c.path == "/login").count()
}

#[tokio::test]
async fn login_sends_credentials_in_form_body_not_query() {
    let fake = FakeLooker::start().await;
    let c = client(&fake);
    find(&c, "a@x.com").await;
    let calls = fake.calls();
    let login = &calls[0];
    assert_eq!(
        (login.method.as_str(), login.path.as_str(), login.status),
        ("POST", "/login", 200)
    );
    assert!(
        login
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
    );
    assert!(
        login.query.is_empty(),
        "credentials must not be in the query: {}",
        login.query
    );
    let form: BTreeMap<String, String> = login
        .body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    assert_eq!(form.get("client_id").map(String::as_str), Some(fake.client_id()));
    assert_eq!(
        form.get("client_secret").map(String::as_str),
        Some(fake.client_secret())
    );
    let search = &calls[1];
    let auth = search.authorization.as_deref().unwrap_or_default();
    assert!(auth.starts_with("token "), "{auth}");
}

#[tokio::test]
async fn token_is_reused_across_calls() {
    let fake = FakeLooker::start().await;
    let mut cfg = config(&fake);
    cfg.catalog_ttl = Duration::ZERO;
    let c = LookerClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..3 {
        find(&c, "a@x.com").await;
        c.catalog().await.unwrap_or_else(|e| panic!("{e}"));
    }
    let calls = fake.calls();
    assert_eq!(logins(&calls), 1, "{calls:#?}");
    assert_eq!(calls.len(), 1 + 3 * 4);
    // A clone shares the token.
    find(&c.clone(), "a@x.com").await;
    assert_eq!(fake.login_calls(), 1);
}

#[tokio::test]
async fn concurrent_first_calls_log_in_once() {
    let fake = FakeLooker::start().await;
    fake.set_latency(Duration::from_millis(20));
    let c = client(&fake);
    let finds = (0..8).map(|i| {
        let c = c.clone();
        async move { c.find_user(&format!("u{i}@x.com"), &ReadNeeds::default()).await }
    });
    for r in futures::future::join_all(finds).await {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(fake.login_calls(), 1);
}

#[tokio::test]
async fn logs_in_again_once_after_tokens_expire() {
    let (fake, c) = warm().await;
    fake.expire_tokens();
    find(&c, "a@x.com").await;
    let calls = fake.calls();
    let seen: Vec<(&str, &str, u16)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str(), c.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET", "/users/search", 401),
            ("POST", "/login", 200),
            ("GET", "/users/search", 200)
        ]
    );
}

#[tokio::test]
async fn concurrent_401s_share_one_relogin() {
    let (fake, c) = warm().await;
    fake.set_latency(Duration::from_millis(20));
    fake.expire_tokens();
    let finds = (0..8).map(|i| {
        let c = c.clone();
        async move { c.find_user(&format!("u{i}@x.com"), &ReadNeeds::default()).await }
    });
    for r in futures::future::join_all(finds).await {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    let calls = fake.calls();
    assert_eq!(logins(&calls), 1, "{calls:#?}");
    assert_eq!(calls.iter().filter(|c| c.status == 401).count(), 8);
}

#[tokio::test]
async fn a_token_rejected_after_relogin_is_unauthorized() {
    let (fake, c) = warm().await;
    // Tokens issued from now on are dead on arrival.
    fake.set_token_ttl(Duration::ZERO);
    fake.expire_tokens();
    let e = expect_err(c.find_user("a@x.com", &ReadNeeds::default()).await);
    assert_eq!((e.kind, e.status), (ErrorKind::Unauthorized, Some(401)));
    let calls = fake.calls();
    assert_eq!(logins(&calls), 1, "one re-login only: {calls:#?}");
    assert_eq!(calls.iter().filter(|c| c.path == "/users/search").count(), 2);
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_and_do_not_leak() {
    let fake = FakeLooker::start().await;
    let mut cfg = config(&fake);
    cfg.client_secret = SecretString::from("definitely-wrong-secret".to_owned());
    let c = LookerClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    let e = expect_err(c.find_user("a@x.com", &ReadNeeds::default()).await);
    assert_eq!((e.kind, e.status), (ErrorKind::Unauthorized, Some(404)));
    assert!(!e.to_string().contains("definitely-wrong-secret"), "{e}");
    assert!(!format!("{e:?}").contains("definitely-wrong-secret"));
    assert_eq!(fake.calls().len(), 1, "no call without a token");
}

#[tokio::test]
async fn find_user_escapes_like_wildcards() {
    let (fake, c) = warm().await;
    let axb = fake.add_user("axb@x.com", "A", "X");
    let a_b = fake.add_user("a_b@x.com", "A", "B");
    let pct = fake.add_user("a%c@x.com", "A", "C");
    let abc = fake.add_user("abbc@x.com", "A", "BC");
    let got = |u: Option<gatehouse_domain::looker::LookerUser>| u.map(|u| u.id);
    assert_eq!(got(find(&c, "a_b@x.com").await), Some(a_b.clone()));
    assert_eq!(got(find(&c, "axb@x.com").await), Some(axb));
    assert_eq!(got(find(&c, "a%c@x.com").await), Some(pct));
    assert_eq!(got(find(&c, "abbc@x.com").await), Some(abc));
    assert_eq!(got(find(&c, "A_B@X.COM").await), Some(a_b), "case-insensitive");
    assert_eq!(got(find(&c, "a_@x.com").await), None);
    let calls = fake.calls();
    let sent: Vec<Option<String>> = calls.iter().map(|c| c.query_param("email")).collect();
    assert_eq!(sent[0].as_deref(), Some(r"a\_b@x.com"));
    assert_eq!(sent[2].as_deref(), Some(r"a\%c@x.com"));
    assert_eq!(sent[5].as_deref(), Some(r"a\_@x.com"));
}

#[tokio::test]
async fn escaped_search_matches_only_the_literal_email_on_the_server() {
    // `a_b@x.com` unescaped would match `axb@x.com` too; escaped, the fake returns only one.
    let (fake, c) = warm().await;
    fake.add_user("axb@x.com", "A", "X");
    let a_b = fake.add_user("a_b@x.com", "A", "B");
    let u = find(&c, "a_b@x.com").await.map(|u| u.id);
    assert_eq!(u, Some(a_b));
    // The same query, replayed raw, shows what the server matched.
    let call = &fake.calls()[0];
    let http = reqwest::Client::new();
    let token = fake_token(&fake).await;
    let url = format!("{}/api/4.0/users/search?{}", fake.base_url(), call.query);
    let body: serde_json::Value = http
        .get(url)
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{body}");
}

async fn fake_token(fake: &FakeLooker) -> String {
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/4.0/login", fake.base_url()))
        .form(&[
            ("client_id", fake.client_id()),
            ("client_secret", fake.client_secret()),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    body["access_token"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn find_user_is_one_call_when_needs_are_empty() {
    let (fake, c) = warm().await;
    let g = fake.add_group("eng");
    let u = fake.add_user("dana@x.com", "Dana", "S");
    fake.add_user_to_group(&u, &g);
    let s = fake.add_session(&u);
    let k = fake.add_api3_key(&u);
    fake.set_disabled(&u, true);
    fake.reset_calls();
    let user = find(&c, "dana@x.com").await.unwrap_or_else(|| panic!("dana"));
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("GET", "/users/search")
    );
    assert_eq!(calls[0].query_param("fields").as_deref(), Some(SEARCH_FIELDS));
    assert_eq!(calls[0].query_param("email").as_deref(), Some("dana@x.com"));
    assert_eq!(user.id, u);
    assert!(user.is_disabled);
    assert_eq!(user.email.as_deref(), Some("dana@x.com"));
    assert_eq!(user.group_ids, BTreeSet::from([g]).into());
    assert_eq!(user.session_ids, vec![s]);
    assert_eq!(user.api3_key_ids, vec![k]);
    assert_eq!(user.direct_role_ids, None);
    assert_eq!(user.user_attribute_values, None);
}

#[tokio::test]
async fn find_user_reads_direct_roles_and_user_set_attributes() {
    let (fake, c) = warm().await;
    let u = fake.add_user("eve@x.com", "Eve", "R");
    let (direct, via_group) = (fake.add_role("viewer"), fake.add_role("developer"));
    let g = fake.add_group("eng");
    fake.set_group_roles(&g, &[&via_group]);
    fake.add_user_to_group(&u, &g);
    fake.set_direct_roles(&u, &[&direct]);
    let (region, team, other) = (
        fake.add_user_attribute("region"),
        fake.add_user_attribute("team"),
        fake.add_user_attribute("other"),
    );
    fake.set_user_attribute(&u, &region, "eu");
    fake.set_user_attribute_default(&team, Some("none"));
    fake.set_user_attribute(&u, &other, "not requested");
    fake.reset_calls();
    let needs = ReadNeeds {
        direct_roles: true,
        attribute_ids: vec![region.clone(), team.clone()],
        logins: false,
    };
    let user = c
        .find_user("eve@x.com", &needs)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let user = user.unwrap_or_else(|| panic!("eve"));
    assert_eq!(user.direct_role_ids, Some(BTreeSet::from([direct])));
    assert_eq!(
        user.user_attribute_values,
        Some(BTreeMap::from([(region.clone(), "eu".to_owned())]))
    );
    // Issue 14: the direct roles come with the search (`role_ids`), not from a read of their own.
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls.iter().all(|c| !c.path.ends_with("/roles")), "{calls:#?}");
    let attrs = calls
        .iter()
        .find(|c| c.path == format!("/users/{u}/attribute_values"))
        .unwrap_or_else(|| panic!("attribute values"));
    assert_eq!(
        attrs.query_param("user_attribute_ids"),
        Some(format!("{region},{team}"))
    );
    assert_eq!(
        attrs.query_param("fields").as_deref(),
        Some("user_attribute_id,value,source")
    );
    // An unknown user makes no further reads.
    fake.reset_calls();
    assert!(
        c.find_user("nobody@x.com", &needs)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    assert_eq!(fake.calls().len(), 1);
}

#[tokio::test]
async fn catalog_reads_only_the_kinds_asked_for() {
    let fake = FakeLooker::start().await;
    let g = fake.add_group("eng");
    fake.add_role("viewer");
    fake.add_user_attribute("region");
    let c = LookerClient::new(config(&fake))
        .unwrap_or_else(|e| panic!("{e}"))
        .with_catalog_kinds(CatalogKinds {
            groups: true,
            roles: false,
            user_attributes: false,
        });
    let cat = c.catalog().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cat.groups, BTreeMap::from([("eng".to_owned(), g)]));
    assert!(cat.roles.is_empty() && cat.user_attributes.is_empty(), "{cat:?}");
    let lists: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.path != "/login")
        .map(|c| c.path)
        .collect();
    assert_eq!(lists, vec!["/groups".to_owned()]);
}

/// Issue 14: the catalog is cached for an hour by default, so a group deleted in Looker and
/// made again under the same name has a new id the cache does not know. The write that uses the
/// old id is answered 404; that drops the cache, and the next read resolves the new id. A 404
/// to a read (a user gone) keeps it.
#[tokio::test]
async fn a_write_answered_404_drops_the_cached_catalog() {
    let (fake, c) = warm().await;
    let old = fake.add_group("Engineers");
    let user = fake.add_user("ada@example.com", "Ada", "L");
    let cat = c.catalog().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cat.groups.get("Engineers"), Some(&old));
    fake.remove_group(&old);
    let new = fake.add_group("Engineers");
    assert_ne!(old, new);

    // A read answered 404 leaves the cache alone.
    assert!(
        c.user("999999", &ReadNeeds::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
    fake.reset_calls();
    let cached = c.catalog().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cached.groups.get("Engineers"), Some(&old), "still cached");
    assert!(fake.calls().is_empty(), "no call while the catalog is fresh");

    let stale = LookerOp::AddToGroup {
        group: named("Engineers", &old),
    };
    let e = expect_err(c.execute(&id(&user), &stale).await);
    assert_eq!(e.status, Some(404), "{e}");
    fake.reset_calls();
    let fresh = c.catalog().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fresh.groups.get("Engineers"), Some(&new));
    assert!(
        fake.calls().iter().any(|c| c.path == "/groups"),
        "the catalog was read again"
    );
    let again = LookerOp::AddToGroup {
        group: named("Engineers", &new),
    };
    exec(&fake, &c, &id(&user), &again).await;
    assert!(fake.user(&user).unwrap().group_ids.contains(&new));
}

#[tokio::test]
async fn catalog_is_cached_while_fresh() {
    let (fake, c) = warm().await;
    let g = fake.add_group("eng");
    let r = fake.add_role("viewer");
    let a = fake.add_user_attribute("region");
    let cat = c.catalog().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cat.groups, BTreeMap::from([("eng".to_owned(), g)]));
    assert_eq!(cat.roles.get("viewer"), Some(&r));
    assert!(cat.roles.contains_key("Admin"));
    assert_eq!(cat.user_attributes, BTreeMap::from([("region".to_owned(), a)]));
    let calls = fake.calls();
    let paths: BTreeSet<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, BTreeSet::from(["/groups", "/roles", "/user_attributes"]));
    assert!(
        calls
            .iter()
            .all(|c| c.query_param("fields").as_deref() == Some("id,name"))
    );
    fake.reset_calls();
    fake.add_group("later");
    let again = c.catalog().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, cat);
    assert!(fake.calls().is_empty(), "no call while the catalog is fresh");

    let mut cfg = config(&fake);
    cfg.catalog_ttl = Duration::ZERO;
    let uncached = LookerClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    let fresh = uncached.catalog().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(fresh.groups.contains_key("later"));
}

#[tokio::test]
async fn create_user_then_email_credentials() {
    let (fake, c) = warm().await;
    let op = LookerOp::CreateUser {
        first_name: Some("New".into()),
        last_name: Some("Hire".into()),
        email: None,
    };
    let new_id = exec(&fake, &c, &UserRef::New, &op)
        .await
        .unwrap_or_else(|| panic!("create returns the id"));
    let op = LookerOp::CreateEmailCredentials {
        email: "new.hire@x.com".into(),
    };
    assert_eq!(exec(&fake, &c, &id(&new_id), &op).await, None);
    let v = fake
        .user_by_email("new.hire@x.com")
        .unwrap_or_else(|| panic!("created"));
    assert_eq!(
        (v.id.as_str(), v.first_name.as_deref(), v.last_name.as_deref()),
        (new_id.as_str(), Some("New"), Some("Hire"))
    );
    // Again: the email exists → Conflict.
    let e = expect_err(c.execute(&id(&new_id), &op).await);
    assert_eq!((e.kind, e.status), (ErrorKind::Conflict, Some(409)));
}

#[tokio::test]
async fn create_user_with_its_email_in_one_call() {
    let (fake, c) = warm().await;
    let op = LookerOp::CreateUser {
        first_name: Some("One".into()),
        last_name: Some("Call".into()),
        email: Some("one.call@x.com".into()),
    };
    let new_id = exec(&fake, &c, &UserRef::New, &op)
        .await
        .unwrap_or_else(|| panic!("create returns the id"));
    let v = fake
        .user_by_email("one.call@x.com")
        .unwrap_or_else(|| panic!("created with its email"));
    assert_eq!(v.id, new_id);
    // The same email again: 409 Conflict, and no second user.
    let e = expect_err(c.execute(&UserRef::New, &op).await);
    assert_eq!((e.kind, e.status), (ErrorKind::Conflict, Some(409)));
}

#[tokio::test]
async fn set_disabled_leaves_sessions_and_keys_alive() {
    let (fake, c) = warm().await;
    let u = fake.add_user("leaver@x.com", "L", "V");
    let s = fake.add_session(&u);
    let k = fake.add_api3_key(&u);
    exec(&fake, &c, &id(&u), &LookerOp::SetDisabled { disabled: true }).await;
    let v = fake.user(&u).unwrap_or_else(|| panic!("user"));
    assert!(v.is_disabled);
    assert_eq!(
        (v.session_ids.clone(), v.api3_key_ids.clone()),
        (vec![s.clone()], vec![k.clone()])
    );
    exec(
        &fake,
        &c,
        &id(&u),
        &LookerOp::DeleteSession {
            session_id: s.clone(),
        },
    )
    .await;
    exec(&fake, &c, &id(&u), &LookerOp::DeleteApiKey { key_id: k.clone() }).await;
    let v = fake.user(&u).unwrap_or_else(|| panic!("user"));
    assert!(v.session_ids.is_empty() && v.api3_key_ids.is_empty());
    exec(&fake, &c, &id(&u), &LookerOp::SetDisabled { disabled: false }).await;
    assert!(fake.user(&u).is_some_and(|v| !v.is_disabled));
}

#[tokio::test]
async fn deleting_a_gone_session_or_key_is_not_found() {
    let (fake, c) = warm().await;
    let u = fake.add_user("gone@x.com", "G", "O");
    let s = fake.add_session(&u);
    let op = LookerOp::DeleteSession { session_id: s };
    exec(&fake, &c, &id(&u), &op).await;
    let e = expect_err(c.execute(&id(&u), &op).await);
    assert_eq!((e.kind, e.status), (ErrorKind::NotFound, Some(404)));
    assert!(!e.is_retryable());
    let e = expect_err(
        c.execute(
            &id(&u),
            &LookerOp::DeleteApiKey {
                key_id: "999999".into(),
            },
        )
        .await,
    );
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn group_membership_ops() {
    let (fake, c) = warm().await;
    let u = fake.add_user("joiner@x.com", "J", "O");
    let g = fake.add_group("eng");
    exec(
        &fake,
        &c,
        &id(&u),
        &LookerOp::AddToGroup {
            group: named("eng", &g),
        },
    )
    .await;
    assert!(fake.user(&u).is_some_and(|v| v.group_ids.contains(&g)));
    exec(
        &fake,
        &c,
        &id(&u),
        &LookerOp::RemoveFromGroup {
            group: named("eng", &g),
        },
    )
    .await;
    assert!(fake.user(&u).is_some_and(|v| v.group_ids.is_empty()));
    let e = expect_err(
        c.execute(
            &id(&u),
            &LookerOp::AddToGroup {
                group: named("ghost", "999999"),
            },
        )
        .await,
    );
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn set_roles_replaces_direct_roles() {
    let (fake, c) = warm().await;
    let u = fake.add_user("roles@x.com", "R", "O");
    let (r1, r2) = (fake.add_role("viewer"), fake.add_role("developer"));
    fake.set_direct_roles(&u, &[&r1]);
    let op = LookerOp::SetRoles {
        roles: vec![named("developer", &r2)],
    };
    exec(&fake, &c, &id(&u), &op).await;
    assert_eq!(
        fake.user(&u).map(|v| v.direct_role_ids),
        Some(BTreeSet::from([r2]))
    );
    // An unknown role is a validation error: permanent, with Looker's message.
    let op = LookerOp::SetRoles {
        roles: vec![named("ghost", "999999")],
    };
    let e = expect_err(c.execute(&id(&u), &op).await);
    assert_eq!((e.kind, e.status), (ErrorKind::Permanent, Some(422)));
    assert!(e.message.contains("role 999999 not found"), "{e}");
}

#[tokio::test]
async fn attribute_ops() {
    let (fake, c) = warm().await;
    let u = fake.add_user("attr@x.com", "A", "T");
    let a = fake.add_user_attribute("region");
    let op = LookerOp::SetAttribute {
        attribute: named("region", &a),
        value: "eu".into(),
    };
    exec(&fake, &c, &id(&u), &op).await;
    assert_eq!(
        fake.user(&u).map(|v| v.attribute_values),
        Some(BTreeMap::from([(a.clone(), "eu".to_owned())]))
    );
    exec(
        &fake,
        &c,
        &id(&u),
        &LookerOp::DeleteAttribute {
            attribute: named("region", &a),
        },
    )
    .await;
    assert!(fake.user(&u).is_some_and(|v| v.attribute_values.is_empty()));
}

#[tokio::test]
async fn delete_user() {
    let (fake, c) = warm().await;
    let u = fake.add_user("bye@x.com", "B", "Y");
    exec(&fake, &c, &id(&u), &LookerOp::DeleteUser).await;
    assert!(fake.user(&u).is_none());
    let e = expect_err(c.execute(&id(&u), &LookerOp::DeleteUser).await);
    assert_eq!(e.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn offline_only_and_unresolved_ops_make_no_call() {
    let (fake, c) = warm().await;
    let cases = [
        (id("1"), LookerOp::DeleteEverySession),
        (id("1"), LookerOp::DeleteEveryApiKey),
        (UserRef::New, LookerOp::SetDisabled { disabled: true }),
        (UserRef::Email("a@x.com".into()), LookerOp::DeleteUser),
        (
            id("1"),
            LookerOp::AddToGroup {
                group: Named {
                    name: "eng".into(),
                    id: None,
                },
            },
        ),
        (id("../../roles"), LookerOp::DeleteUser),
    ];
    for (user, op) in cases {
        let e = expect_err(c.execute(&user, &op).await);
        assert_eq!(e.kind, ErrorKind::Permanent, "{op:?}");
    }
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn throttling_is_classified_with_retry_after() {
    let (fake, c) = warm().await;
    let u = fake.add_user("t@x.com", "T", "H");
    fake.set_retry_after_secs(7);
    fake.fail_next(429, 1);
    let e = expect_err(
        c.execute(&id(&u), &LookerOp::SetDisabled { disabled: true })
            .await,
    );
    assert_eq!(
        (e.kind, e.status, e.retry_after),
        (ErrorKind::Throttled, Some(429), Some(Duration::from_secs(7)))
    );
    assert!(e.is_retryable());
    assert!(
        fake.user(&u).is_some_and(|v| !v.is_disabled),
        "a throttled call changed nothing"
    );
    assert_eq!(fake.calls().len(), 1, "no retry inside the client");
}

#[tokio::test]
async fn server_errors_are_transient() {
    let (fake, c) = warm().await;
    for status in [500, 503] {
        fake.reset_calls();
        fake.fail_next(status, 1);
        let e = expect_err(c.find_user("a@x.com", &ReadNeeds::default()).await);
        assert_eq!((e.kind, e.status), (ErrorKind::Transient, Some(status)));
        assert_eq!(fake.calls().len(), 1, "no retry inside the client");
    }
}

#[tokio::test]
async fn random_faults_are_all_retryable() {
    let (fake, c) = warm().await;
    fake.set_fault_rate(0.5, 11);
    let mut failures = 0;
    for _ in 0..40 {
        if let Err(e) = c.find_user("a@x.com", &ReadNeeds::default()).await {
            assert!(e.is_retryable(), "{e}");
            failures += 1;
        }
    }
    assert!((5..35).contains(&failures), "{failures}");
}

#[tokio::test]
async fn unreachable_looker_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    drop(listener);
    let c = LookerClient::new(LookerConfig {
        base_url: format!("http://{addr}"),
        client_id: "id".into(),
        client_secret: SecretString::from("s3cr3t-value".to_owned()),
        timeout: Duration::from_secs(2),
        catalog_ttl: Duration::ZERO,
        max_concurrent_calls: gatehouse_targets::client::looker::DEFAULT_MAX_CONCURRENT_CALLS,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let e = expect_err(c.catalog().await);
    assert_eq!((e.kind, e.status), (ErrorKind::Transient, None));
    assert!(!e.message.contains("s3cr3t-value"));
}

#[tokio::test]
async fn slow_looker_times_out_as_transient() {
    let fake = FakeLooker::start().await;
    let mut cfg = config(&fake);
    cfg.timeout = Duration::from_millis(100);
    let c = LookerClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
    fake.set_latency(Duration::from_millis(400));
    let e = expect_err(c.find_user("a@x.com", &ReadNeeds::default()).await);
    assert_eq!((e.kind, e.status), (ErrorKind::Transient, None));
    assert!(e.message.contains("timed out"), "{e}");
}

#[tokio::test]
async fn debug_and_errors_never_show_the_secret_or_token() {
    let (fake, c) = warm().await;
    find(&c, "a@x.com").await;
    let used = fake.calls()[0].authorization.clone().unwrap_or_default();
    let used = used.trim_start_matches("token ").to_owned();
    assert!(!used.is_empty());
    let dbg = format!("{c:?} {:?}", config(&fake));
    assert!(!dbg.contains(fake.client_secret()), "{dbg}");
    assert!(!dbg.contains(&used), "{dbg}");
    fake.fail_next(500, 1);
    let e = expect_err(c.find_user("a@x.com", &ReadNeeds::default()).await);
    let shown = format!("{e} {e:?}");
    assert!(
        !shown.contains(fake.client_secret()) && !shown.contains(&used),
        "{shown}"
    );
}

#[test]
fn calls_are_counted_with_templated_endpoints() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    // Current-thread runtime: the client's futures are polled on this thread, where the local
    // recorder is installed.
    let _guard = metrics::set_default_local_recorder(&recorder);
    rt.block_on(async {
        let (fake, c) = warm().await;
        let u = fake.add_user("m@x.com", "M", "E");
        let s = fake.add_session(&u);
        c.execute(
            &id(&u),
            &LookerOp::DeleteSession {
                session_id: s.clone(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let _ = c
            .execute(&id(&u), &LookerOp::DeleteSession { session_id: s })
            .await;
    });
    let text = handle.render();
    let line = |endpoint: &str, method: &str, status: &str| {
        text.lines().any(|l| {
            l.starts_with("gatehouse_looker_calls_total{")
                && l.contains(&format!("endpoint=\"{endpoint}\""))
                && l.contains(&format!("method=\"{method}\""))
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(line("/login", "POST", "200"), "{text}");
    assert!(line("/users/search", "GET", "200"), "{text}");
    assert!(line("/users/{id}/sessions/{id}", "DELETE", "204"), "{text}");
    assert!(line("/users/{id}/sessions/{id}", "DELETE", "404"), "{text}");
    assert!(!text.contains("/users/1"), "raw ids leaked into labels: {text}");
}

/// The meter counts every request the client sends, login, re-login after a 401 and failed
/// calls included: exactly the calls Looker saw.
#[tokio::test]
async fn the_call_meter_counts_every_request_looker_receives() {
    let fake = FakeLooker::start().await;
    let meter = gatehouse_targets::client::looker::CallMeter::new();
    let c = LookerClient::with_meter(config(&fake), meter.clone()).unwrap();
    find(&c, "nobody@x.com").await; // login + search
    c.catalog().await.unwrap(); // three lists
    fake.expire_tokens();
    find(&c, "nobody@x.com").await; // 401, login, search again
    fake.fail_next(503, 1);
    let e = expect_err(c.find_user("nobody@x.com", &ReadNeeds::default()).await);
    assert_eq!(e.status, Some(503), "{e}");
    let seen = fake.calls().len() as u64;
    assert_eq!(seen, 9, "{:#?}", fake.calls());
    assert_eq!(meter.pending(), seen, "one count per request the fake received");
    assert_eq!(c.meter().take(), seen, "the client's own meter is the shared one");
    assert_eq!(meter.pending(), 0, "take resets the count");
    meter.give_back(3);
    assert_eq!(meter.take(), 3, "a failed flush's calls come back");
}

/// Most calls in flight at once at the fake: the largest number of recorded calls whose
/// [started_at, finished_at) intervals overlap.
fn most_in_flight(calls: &[RecordedCall]) -> usize {
    let mut edges: Vec<(tokio::time::Instant, i32)> = calls
        .iter()
        .flat_map(|c| [(c.started_at, 1), (c.finished_at, -1)])
        .collect();
    // An answer at the same instant as a new request ends first.
    edges.sort_by_key(|&(t, d)| (t, d));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

async fn concurrent_finds(max_concurrent_calls: usize) -> usize {
    let fake = FakeLooker::start().await;
    let c = LookerClient::new(LookerConfig {
        max_concurrent_calls,
        ..config(&fake)
    })
    .unwrap();
    find(&c, "warm@x.com").await;
    fake.reset_calls();
    fake.set_latency(Duration::from_millis(300));
    let finds: Vec<_> = (0..12)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { find(&c, &format!("p{i}@x.com")).await })
        })
        .collect();
    for f in finds {
        f.await.unwrap();
    }
    let calls = fake.calls();
    assert_eq!(calls.len(), 12, "every search reached Looker once");
    most_in_flight(&calls)
}

/// Issue 13: the processor runs many events at once (`[processor] workers`), but Looker sees
/// at most `[looker] max_concurrent_calls` calls in flight from one client and its clones; the
/// others wait their turn. Without the limit the same twelve searches overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_are_held_to_max_concurrent_calls() {
    assert!(concurrent_finds(3).await <= 3, "at most 3 calls in flight");
    assert!(
        concurrent_finds(12).await > 3,
        "with room for twelve, more than three overlap (the check can fail)"
    );
}
