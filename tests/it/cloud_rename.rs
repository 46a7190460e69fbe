//! Issue 16 in the clouds: a renamed person (Okta profile update, same Okta user id) keeps one
//! GCP member and one IAM user. GCP: the bindings follow the member string (old member out, new
//! in, one setIamPolicy per resource), and an offboarding leaves neither. AWS: the IAM user linked
//! to the person stays theirs when the user mapping would name another; the change is reported,
//! never split, and the offboarding closes the linked user. The AWS test needs moto
//! (`scripts/with-servers.sh cargo test -p gatehouse-e2e --test it cloud_rename`).

use aws_sdk_iam::Client;
use aws_sdk_iam::config::{Builder, Credentials, Region};
use gatehouse_domain::ports::StateStore;
use gatehouse_e2e::{Options, example_policy, okta_fixture, seed_catalog, spawn_app};
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::gcp_iam_fake::FakeGcpIam;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const PERSON: &str = "00urenamedcloud";
const ACTIVATE: &str = "event-hook.user.lifecycle.activate.constructed.json";
const UPDATE_PROFILE: &str = "event-hook.user.account.update_profile.constructed.json";
const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";
const OLD: &str = "john.doe@example.com";
const NEW: &str = "john.d@example.com";

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

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        gatehouse_domain::clock::now()
            .timestamp_nanos_opt()
            .unwrap_or_default() as u128,
    );
    h.finish() as u32
}

#[tokio::test]
async fn gcp_bindings_follow_the_member_when_the_email_changes_and_offboarding_leaves_neither() {
    let project = "projects/p-rename";
    let gcp = FakeGcpIam::start().await;
    gcp.add_resource(
        project,
        json!([{ "role": "roles/owner", "members": ["user:boss@example.com"] }]),
    );
    let looker = FakeLooker::start().await;
    seed_catalog(&looker);
    looker.add_user(OLD, "John", "Doe");
    let policy = format!(
        "{}\n[[rule]]\nname = \"everyone-views\"\nwhen = \"everyone\"\n\
         gcp_bindings = [{{ resource = {project:?}, role = \"roles/viewer\" }}]\n",
        example_policy()
    );
    let app = spawn_app(Options {
        looker: Some(looker.clone()),
        policy: Some(policy),
        extra_toml: gcp.toml(),
        ..Default::default()
    })
    .await;
    let viewers = || gcp.members(project, "roles/viewer");

    app.deliver(&okta_event(ACTIVATE, OLD, "ev-1", "2024-05-01T10:00:00.000Z"))
        .await;
    assert_eq!(viewers(), vec![format!("user:{OLD}")]);
    assert_eq!(
        app.store
            .account_links("gcp", &format!("okta:{PERSON}"))
            .await
            .unwrap(),
        vec![format!("user:{OLD}")],
        "the person is linked to the member they were granted under"
    );

    gcp.reset_calls();
    app.deliver(&okta_event(
        UPDATE_PROFILE,
        NEW,
        "ev-2",
        "2024-05-02T10:00:00.000Z",
    ))
    .await;
    assert_eq!(
        viewers(),
        vec![format!("user:{NEW}")],
        "the old member left the managed binding and the new one holds it"
    );
    assert_eq!(
        gcp.count("setIamPolicy"),
        1,
        "one setIamPolicy for the resource: {:?}",
        gcp.calls()
    );
    let rows = app.ledger().await;
    assert!(
        rows.iter().any(|r| r.entry.target == "gcp"
            && r.entry.rule == "identity.member_changed"
            && r.entry
                .call
                .body
                .as_ref()
                .is_some_and(|b| b["remove"]["member"] == format!("user:{OLD}"))
            && r.entry.status == "200"),
        "the removal of the old member is ledgered: {rows:#?}"
    );
    assert_eq!(
        gcp.members(project, "roles/owner"),
        vec!["user:boss@example.com"],
        "unmanaged bindings are kept"
    );

    // Someone grants the old member again by hand: offboarding removes it too (by the link).
    let mut p = gcp.policy(project).unwrap();
    p["bindings"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|b| b["role"] == "roles/viewer")
        .unwrap()["members"]
        .as_array_mut()
        .unwrap()
        .push(json!(format!("user:{OLD}")));
    gcp.add_resource(project, p["bindings"].clone());
    assert_eq!(viewers().len(), 2);

    app.deliver(&okta_event(DEACTIVATE, NEW, "ev-3", "2024-05-03T10:00:00.000Z"))
        .await;
    assert!(
        viewers().is_empty(),
        "no binding is left for either member: {:?}",
        gcp.policy(project)
    );
    assert_eq!(gcp.members(project, "roles/owner"), vec!["user:boss@example.com"]);
    app.stop().await;
}

fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: this test needs moto. Run `make test` or \
             scripts/with-servers.sh cargo test -p gatehouse-e2e --test it cloud_rename"
        )
    })
}

fn iam() -> Client {
    let conf = Builder::new()
        .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    Client::from_conf(conf)
}

async fn groups_of(c: &Client, user: &str) -> BTreeSet<String> {
    c.list_groups_for_user()
        .user_name(user)
        .send()
        .await
        .unwrap()
        .groups()
        .iter()
        .map(|g| g.group_name().to_string())
        .collect()
}

async fn key_states(c: &Client, user: &str) -> Vec<String> {
    c.list_access_keys()
        .user_name(user)
        .send()
        .await
        .unwrap()
        .access_key_metadata()
        .iter()
        .map(|k| k.status().map(|s| s.as_str().to_string()).unwrap_or_default())
        .collect()
}

async fn user_count(c: &Client, run: &str) -> usize {
    c.list_users()
        .send()
        .await
        .unwrap()
        .users()
        .iter()
        .filter(|u| u.user_name().ends_with(run))
        .count()
}

#[tokio::test]
async fn a_changed_aws_mapping_is_reported_and_the_linked_iam_user_is_offboarded() {
    let run = format!("{:08x}", rand_u32());
    let c = iam();
    let eng = format!("eng-{run}");
    c.create_group().group_name(&eng).send().await.unwrap();
    // The person's IAM user, and one that the new email's mapping would name (someone else's).
    let linked = format!("john.doe-{run}");
    let other = format!("john.d-{run}");
    for u in [&linked, &other] {
        c.create_user().user_name(u).send().await.unwrap();
        c.create_access_key().user_name(u).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("aws-credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    let extra = format!(
        "[aws]\nenabled = true\nuser_mapping = {{ template = \"{{local}}-{run}\" }}\nendpoint_url = {:?}\n\
         region = \"us-east-1\"\ncredentials_file = {:?}\n\
         [identity]\nallowed_email_domains = [\"example.com\"]\n",
        moto_url(),
        creds.display().to_string(),
    );
    let policy = format!(
        "{}\n[[rule]]\nname = \"everyone-eng\"\nwhen = \"everyone\"\naws_groups = [{eng:?}]\n",
        example_policy()
    );
    let looker = FakeLooker::start().await;
    seed_catalog(&looker);
    looker.add_user(OLD, "John", "Doe");
    let app = spawn_app(Options {
        looker: Some(looker.clone()),
        policy: Some(policy),
        extra_toml: extra,
        ..Default::default()
    })
    .await;

    app.deliver(&okta_event(ACTIVATE, OLD, "ev-1", "2024-05-01T10:00:00.000Z"))
        .await;
    assert_eq!(groups_of(&c, &linked).await, [eng.clone()].into());
    assert_eq!(
        app.store
            .account_links("aws", &format!("okta:{PERSON}"))
            .await
            .unwrap(),
        vec![linked.clone()]
    );

    app.deliver(&okta_event(
        UPDATE_PROFILE,
        NEW,
        "ev-2",
        "2024-05-02T10:00:00.000Z",
    ))
    .await;
    assert_eq!(user_count(&c, &run).await, 2, "no new iam user");
    assert!(
        groups_of(&c, &other).await.is_empty(),
        "the iam user the new mapping names is not acted on"
    );
    assert_eq!(groups_of(&c, &linked).await, [eng.clone()].into());
    let rows = app.ledger().await;
    let report: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.rule == "identity.mapping_changed")
        .collect();
    assert_eq!(report.len(), 1, "{rows:#?}");
    assert_eq!(report[0].entry.target, "aws");
    assert!(
        report[0].entry.status.starts_with("withheld: ")
            && report[0].entry.status.contains(&other)
            && report[0].entry.status.contains(&linked),
        "{:?}",
        report[0].entry.status
    );
    assert!(
        !rows.iter().any(|r| r.entry.target == "aws"
            && r.entry
                .call
                .body
                .as_ref()
                .is_some_and(|b| b["UserName"] == other.as_str())),
        "no call names the other iam user: {rows:#?}"
    );

    app.deliver(&okta_event(DEACTIVATE, NEW, "ev-3", "2024-05-03T10:00:00.000Z"))
        .await;
    assert!(
        groups_of(&c, &linked).await.is_empty(),
        "the linked user lost the managed group"
    );
    assert_eq!(
        key_states(&c, &linked).await,
        vec!["Inactive"],
        "its key is deactivated"
    );
    assert_eq!(
        key_states(&c, &other).await,
        vec!["Active"],
        "the other user is untouched"
    );
    assert_eq!(user_count(&c, &run).await, 2);
    app.stop().await;
    drop(dir);
}
