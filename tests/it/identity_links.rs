//! Issue 16 end to end: a person is one Looker user whatever their email becomes. Every test
//! drives the real Okta intake (handbook fixtures, with the renamed person's ids and emails
//! edited in) against the fake Looker and ends with the person's original Looker user
//! offboarded and no second user created.

use gatehouse_domain::ports::StateStore;
use gatehouse_e2e::{Options, example_policy, okta_fixture, seed_catalog, spawn_app};
use gatehouse_testkit::FakeLooker;
use serde_json::Value;

const PERSON: &str = "00urenamed01";

/// An Okta hook from a handbook fixture, about `PERSON` with login `email`, as event `uuid` at
/// `published`.
fn okta_event(fixture: &str, email: &str, uuid: &str, published: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&okta_fixture(fixture)).unwrap();
    let e = &mut v["data"]["events"][0];
    e["uuid"] = uuid.into();
    e["published"] = published.into();
    let user = e["target"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["type"] == "User")
        .unwrap();
    user["id"] = PERSON.into();
    user["alternateId"] = email.into();
    serde_json::to_vec(&v).unwrap()
}

const ACTIVATE: &str = "event-hook.user.lifecycle.activate.constructed.json";
const UPDATE_PROFILE: &str = "event-hook.user.account.update_profile.constructed.json";
const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";

fn ids(fake: &FakeLooker) -> Vec<String> {
    let mut v: Vec<String> = fake.users().into_iter().map(|u| u.id).collect();
    v.sort();
    v
}

/// The issue's own reproduction: activate (john.doe@), a profile update to john.d@, deactivate.
#[tokio::test]
async fn okta_profile_update_renames_the_linked_user_and_deactivate_closes_it() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    for _ in 0..2 {
        fake.add_session(&uid);
        fake.add_api3_key(&uid);
    }
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;
    let before = ids(&fake);

    app.deliver(&okta_event(
        ACTIVATE,
        "john.doe@example.com",
        "ev-1",
        "2024-05-01T10:00:00.000Z",
    ))
    .await;
    assert_eq!(
        app.store
            .account_links("looker", &format!("okta:{PERSON}"))
            .await
            .unwrap(),
        vec![uid.clone()],
        "the person (their Okta user id) is linked to the user their email found"
    );

    app.deliver(&okta_event(
        UPDATE_PROFILE,
        "john.d@example.com",
        "ev-2",
        "2024-05-02T10:00:00.000Z",
    ))
    .await;
    assert_eq!(ids(&fake), before, "no second looker user for a new email");
    assert_eq!(
        fake.user(&uid).unwrap().email.as_deref(),
        Some("john.d@example.com"),
        "the linked user's email credentials follow the directory"
    );
    let rows = app.ledger().await;
    assert!(
        rows.iter().any(|r| r.entry.rule == "onboarding.email"
            && r.entry.call.path == format!("/users/{uid}/credentials_email")
            && r.entry.status == "ok"),
        "the email change is ledgered: {rows:#?}"
    );

    app.deliver(&okta_event(
        DEACTIVATE,
        "john.d@example.com",
        "ev-3",
        "2024-05-03T10:00:00.000Z",
    ))
    .await;
    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled, "the original user is offboarded");
    assert!(u.session_ids.is_empty() && u.api3_key_ids.is_empty(), "{u:?}");
    assert_eq!(ids(&fake), before, "still no second user");
    app.stop().await;
}

/// A duplicate left by the old behaviour (the person's old user 101 linked, a second user for
/// the new email beside it): offboarding closes both, each ledgered.
#[tokio::test]
async fn offboarding_closes_every_account_of_the_person() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let old = fake.add_user("john.doe@example.com", "John", "Doe");
    let old_session = fake.add_session(&old);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;
    app.deliver(&okta_event(
        ACTIVATE,
        "john.doe@example.com",
        "ev-1",
        "2024-05-01T10:00:00.000Z",
    ))
    .await;
    // Someone made a second user for the person's new email by hand.
    let dup = fake.add_user("john.d@example.com", "John", "D");
    let dup_session = fake.add_session(&dup);
    app.deliver(&okta_event(
        DEACTIVATE,
        "john.d@example.com",
        "ev-3",
        "2024-05-03T10:00:00.000Z",
    ))
    .await;
    for (u, s) in [(&old, &old_session), (&dup, &dup_session)] {
        let v = fake.user(u).unwrap();
        assert!(v.is_disabled, "user {u} is offboarded");
        assert!(!v.session_ids.contains(s), "user {u}'s session is revoked");
    }
    let rows = app.ledger().await;
    for u in [&old, &dup] {
        assert!(
            rows.iter()
                .any(|r| r.entry.call.path == format!("/users/{u}") && r.entry.status == "ok"),
            "the disable of {u} is ledgered: {rows:#?}"
        );
    }
    app.stop().await;
}

/// Delete a Looker user outside Gatehouse, through the API as an admin would.
async fn delete_in_looker(fake: &FakeLooker, uid: &str) {
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{}/api/4.0/login", fake.base_url()))
        .form(&[
            ("client_id", fake.client_id()),
            ("client_secret", fake.client_secret()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let r = http
        .delete(format!("{}/api/4.0/users/{uid}", fake.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// The person's linked user is gone and nothing else has their email: the deactivate cannot be
/// confirmed, so it is an error an operator sees (WARN, counter, ledger row, dead letter), never
/// a silent "nothing to revoke".
#[tokio::test]
async fn an_unresolved_offboarding_of_a_linked_person_is_dead_lettered_with_the_reason() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        max_attempts: 2,
        ..Default::default()
    })
    .await;
    app.deliver(&okta_event(
        ACTIVATE,
        "john.doe@example.com",
        "ev-1",
        "2024-05-01T10:00:00.000Z",
    ))
    .await;
    delete_in_looker(&fake, &uid).await;
    app.deliver(&okta_event(
        DEACTIVATE,
        "john.d@example.com",
        "ev-3",
        "2024-05-03T10:00:00.000Z",
    ))
    .await;
    let dlq = app.store.dead_letters().await.unwrap();
    assert_eq!(dlq.len(), 1, "{dlq:#?}");
    assert!(
        dlq[0].reason.contains("unresolved offboarding in looker") && dlq[0].reason.contains(&uid),
        "{}",
        dlq[0].reason
    );
    let rows = app.ledger().await;
    assert!(
        rows.iter().any(|r| r.entry.rule == "identity.resolution"
            && r.entry.envelope_id.ends_with("ev-3")
            && r.entry.status.starts_with("error: unresolved offboarding")),
        "{rows:#?}"
    );
    let m = app.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("gatehouse_unresolved_offboardings_total{target=\"looker\"}")),
        "{m}"
    );
    app.stop().await;
}

/// An install from before the links: the directory knew the person as john.doe@ and no link
/// exists. The profile update to john.d@ finds their user by the previous email the directory
/// kept, links it and renames it; the deactivate closes it. No second user.
#[tokio::test]
async fn an_unlinked_renamed_person_is_found_by_their_previous_email() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    let data = tempfile::tempdir().unwrap();
    // The directory learns the person without Looker configured (no read, so no link).
    let offline = spawn_app(Options {
        policy: Some(example_policy()),
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    offline
        .deliver(&okta_event(
            ACTIVATE,
            "john.doe@example.com",
            "ev-1",
            "2024-05-01T10:00:00.000Z",
        ))
        .await;
    offline.stop().await;
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let key = format!("okta:{PERSON}");
    assert!(app.store.account_links("looker", &key).await.unwrap().is_empty());
    let before = ids(&fake);
    app.deliver(&okta_event(
        UPDATE_PROFILE,
        "john.d@example.com",
        "ev-2",
        "2024-05-02T10:00:00.000Z",
    ))
    .await;
    assert_eq!(ids(&fake), before, "no second looker user");
    assert_eq!(
        app.store.account_links("looker", &key).await.unwrap(),
        vec![uid.clone()]
    );
    assert_eq!(
        fake.user(&uid).unwrap().email.as_deref(),
        Some("john.d@example.com")
    );
    app.deliver(&okta_event(
        DEACTIVATE,
        "john.d@example.com",
        "ev-3",
        "2024-05-03T10:00:00.000Z",
    ))
    .await;
    assert!(fake.user(&uid).unwrap().is_disabled);
    assert_eq!(ids(&fake), before);
    app.stop().await;
}

/// `[identity.looker_sso]`: the Okta user id is the SAML NameID (`saml_user_id`).
const SAML_BY_IDP_ID: &str = "[identity.looker_sso]\ncredential = \"saml\"\nid = \"idp_user_id\"\n";

/// A Looker user that has only a SAML credential: its `saml_user_id` is the person's Okta id,
/// its email (the IdP's, from an old domain) is not the person's.
fn saml_only_user(fake: &FakeLooker) -> String {
    let uid = fake.add_user_without_email("John", "Doe");
    fake.add_sso_credential(&uid, "saml", PERSON, Some("jdoe@legacy.example.org"));
    uid
}

/// Issue 16, the SSO step: no link, no user with the person's email, but their SAML credential
/// names a user: it is the person's. It is linked (no second user is created) and the
/// deactivate disables it and kills its sessions and keys.
#[tokio::test]
async fn an_unlinked_person_is_found_by_their_sso_credential() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let uid = saml_only_user(&fake);
    for _ in 0..2 {
        fake.add_session(&uid);
        fake.add_api3_key(&uid);
    }
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        extra_toml: SAML_BY_IDP_ID.into(),
        ..Default::default()
    })
    .await;
    let before = ids(&fake);
    app.deliver(&okta_event(
        ACTIVATE,
        "john.d@example.com",
        "ev-1",
        "2024-05-01T10:00:00.000Z",
    ))
    .await;
    assert_eq!(ids(&fake), before, "no second looker user for the person");
    assert_eq!(
        app.store
            .account_links("looker", &format!("okta:{PERSON}"))
            .await
            .unwrap(),
        vec![uid.clone()],
        "the user found by the sso credential is linked"
    );
    assert!(
        fake.calls().iter().any(|c| c.method == "GET"
            && c.path == format!("/users/credential/saml/{PERSON}")
            && c.status == 200),
        "{:#?}",
        fake.calls()
    );
    app.deliver(&okta_event(
        DEACTIVATE,
        "john.d@example.com",
        "ev-3",
        "2024-05-03T10:00:00.000Z",
    ))
    .await;
    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled, "the sso user is offboarded");
    assert!(u.session_ids.is_empty() && u.api3_key_ids.is_empty(), "{u:?}");
    assert_eq!(ids(&fake), before);
    app.stop().await;
}

/// The person's email names one user and their SAML credential another: two candidates and no
/// link, so nobody is guessed: one `withheld` resolution row, no write, no link.
#[tokio::test]
async fn email_and_sso_credential_naming_two_users_are_refused() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let by_email = fake.add_user("john.d@example.com", "John", "D");
    let by_saml = saml_only_user(&fake);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        extra_toml: SAML_BY_IDP_ID.into(),
        ..Default::default()
    })
    .await;
    let before = ids(&fake);
    app.deliver(&okta_event(
        ACTIVATE,
        "john.d@example.com",
        "ev-1",
        "2024-05-01T10:00:00.000Z",
    ))
    .await;
    let rows = app.ledger().await;
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.rule == "identity.resolution" && r.entry.status.starts_with("withheld"))
        .collect();
    assert_eq!(refused.len(), 1, "{rows:#?}");
    let why = &refused[0].entry.status;
    assert!(
        why.contains(&by_email) && why.contains(&by_saml) && why.contains("saml credential"),
        "{why}"
    );
    assert!(
        !fake.calls().iter().any(|c| c.is_write),
        "no write: {:#?}",
        fake.calls()
    );
    assert_eq!(ids(&fake), before);
    assert!(
        app.store
            .account_links("looker", &format!("okta:{PERSON}"))
            .await
            .unwrap()
            .is_empty()
    );
    app.stop().await;
}

/// The scheduled deletion finds the person's users through their link (issue 16): the person
/// was linked to user 101 as john.doe@, the deactivate came with a new email (nobody in Looker
/// has it), and the deletion due later still deletes user 101.
#[tokio::test]
async fn the_deletion_sweep_deletes_the_linked_user_of_a_renamed_person() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    let policy = example_policy().replace(
        "delete_after_days = 30",
        "delete_after_days = 0\nhandover = \"none\"",
    );
    assert!(policy.contains("delete_after_days = 0"));
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(policy),
        ..Default::default()
    })
    .await;
    app.deliver(&okta_event(
        ACTIVATE,
        "john.doe@example.com",
        "ev-1",
        "2024-05-01T10:00:00.000Z",
    ))
    .await;
    app.deliver(&okta_event(
        DEACTIVATE,
        "john.d@example.com",
        "ev-3",
        "2024-05-03T10:00:00.000Z",
    ))
    .await;
    gatehouse_e2e::wait_until("the linked user is deleted", || async {
        fake.user(&uid).is_none()
    })
    .await;
    // The ledger row is written once Looker answered the delete.
    gatehouse_e2e::wait_until("the deletion is ledgered", || async {
        app.ledger().await.iter().any(|r| {
            r.entry.rule == "offboarding.delete_after_days"
                && r.entry.call.path == format!("/users/{uid}")
                && r.entry.status == "ok"
        })
    })
    .await;
    app.stop().await;
}
