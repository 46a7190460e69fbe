//! Safety rails (issue 19) end to end: Gatehouse never acts on its own Looker user, and never
//! disables, revokes or removes a protected principal.

use gatehouse_e2e::{Options, example_policy, okta_fixture, seed_catalog, spawn_app};
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::looker_fake::ADMIN_EMAIL;

const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";

/// The deactivate fixture for another person: another email, Okta user id and event id.
fn deactivate_of(email: &str, okta_id: &str, event_uuid: &str) -> Vec<u8> {
    String::from_utf8(okta_fixture(DEACTIVATE))
        .unwrap()
        .replace("john.doe@example.com", email)
        .replace("00u3m90rxKjGQ0G6L1d6", okta_id)
        .replace("ab62c0bc-2837-11eb-9823-9fb8f750c5a9", event_uuid)
        .into_bytes()
}

/// Issue 19's report: the owner of Gatehouse's own API3 key leaves the IdP. Nothing is sent for
/// that Looker user (its key, its disabling: withheld with a ledger row), and Gatehouse's later
/// calls still succeed (the fake ends a deleted key's tokens with 401, as Looker does).
#[tokio::test]
async fn its_own_api3_key_and_user_are_kept_when_their_owner_is_offboarded() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let me = fake.admin_user_id().to_string();
    let my_keys = fake.user(&me).unwrap().api3_key_ids;
    fake.add_user_to_group(&me, &c.engineers);
    let john = fake.add_user("john.doe@example.com", "John", "Doe");
    fake.add_api3_key(&john);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;

    app.deliver(&deactivate_of(
        ADMIN_EMAIL,
        "00uGatehouseOwner01",
        "0b1e0b1e-0000-4000-8000-000000000001",
    ))
    .await;

    let u = fake.user(&me).unwrap();
    assert!(!u.is_disabled, "its own user stays enabled");
    assert_eq!(u.api3_key_ids, my_keys, "its own key is kept");
    assert!(
        u.group_ids.contains(&c.engineers),
        "nothing at all is done to its own user"
    );
    let rows = app.ledger().await;
    assert!(!rows.is_empty());
    for r in &rows {
        assert!(
            r.entry
                .status
                .starts_with("withheld: gatehouse's own looker user"),
            "{}: {}",
            r.entry.call,
            r.entry.status
        );
    }
    let calls: Vec<String> = rows.iter().map(|r| r.entry.call.to_string()).collect();
    let key = &my_keys[0];
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with(&format!("DELETE /api/4.0/users/{me}/credentials_api3/{key}"))),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with(&format!("PATCH /api/4.0/users/{me}"))),
        "{calls:#?}"
    );
    assert!(
        fake.calls()
            .iter()
            .all(|c| !(c.is_write && c.path.starts_with(&format!("/users/{me}"))))
    );

    // Gatehouse still works: the next offboarding is applied.
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    let j = fake.user(&john).unwrap();
    assert!(j.is_disabled);
    assert!(j.api3_key_ids.is_empty());
    let last = app.ledger().await;
    assert!(
        last[rows.len()..].iter().all(|r| r.entry.status == "ok"),
        "{last:#?}"
    );
    app.stop().await;
}

/// A holder of a protected Looker role (`looker:role:Admin`, here through a group) is untouched by
/// an offboarding event: every step is ledgered as withheld with the reason, none is sent.
#[tokio::test]
async fn a_protected_admin_is_untouched_by_an_offboarding_event() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let admin_role = fake
        .user(fake.admin_user_id())
        .unwrap()
        .direct_role_ids
        .into_iter()
        .next()
        .unwrap();
    let break_glass = fake.add_group("Break Glass");
    fake.set_group_roles(&break_glass, &[&admin_role]);
    let john = fake.add_user("john.doe@example.com", "John", "Doe");
    fake.add_user_to_group(&john, &break_glass);
    fake.add_user_to_group(&john, &c.engineers);
    fake.add_session(&john);
    let key = fake.add_api3_key(&john);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        extra_toml: "[safety]\nprotected = [\"looker:role:Admin\"]\n".into(),
        ..Default::default()
    })
    .await;

    app.deliver(&okta_fixture(DEACTIVATE)).await;

    let u = fake.user(&john).unwrap();
    assert!(!u.is_disabled);
    assert_eq!(u.api3_key_ids, vec![key]);
    assert_eq!(u.session_ids.len(), 1);
    assert!(u.group_ids.contains(&c.engineers));
    let rows = app.ledger().await;
    assert!(rows.len() >= 4, "disable, session, key, group: {rows:#?}");
    for r in &rows {
        assert_eq!(
            r.entry.status,
            format!("withheld: protected principal: looker user {john}, holder of looker role Admin"),
            "{}",
            r.entry.call
        );
    }
    assert!(fake.calls().iter().all(|c| !c.is_write), "nothing was sent");
    app.stop().await;
}
