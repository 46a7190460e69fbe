//! IAM Identity Center wired as the processor wires it (`Engine::with_target_in`, the client
//! built by `IdentityCenter::connect` from an endpoint and a credentials file), against moto's
//! `identitystore` (`GATEHOUSE_TEST_MOTO_URL`; run through `scripts/with-servers.sh`): IdP events
//! join and leave groups through the one loop, a replay costs nothing, and a deactivate for a
//! person linked to a user that is gone fails permanently, which the worker dead-letters
//! (issue 16's rail, like an unresolved Looker offboarding).

use chrono::DateTime;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::StateStore;
use gatehouse_engine::engine::{Engine, Handled};
use gatehouse_engine::reconcile::{self, LogProgress};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_targets::client::aws_iam::AwsConnect;
use gatehouse_targets::client::identity_center::{IdcSettings, IdentityCenter};
use gatehouse_targets::client::looker::LookerClient;
use gatehouse_targets::identity_center::IdentityCenterTarget;
use gatehouse_targets::{Mode, RetryPolicy};
use std::sync::Arc;
use std::time::Duration;

const ADA: &str = "ada@example.com";

fn envelope(id: &str, secs: i64, event: IdentityEvent) -> Envelope {
    let at = DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(id.into()),
        source: Source::Okta,
        subject: Subject {
            key: "okta:00uada".into(),
            email: Some(ADA.into()),
            display_name: Some("Ada Lovelace".into()),
        },
        occurred_at: at,
        received_at: at,
        source_event_type: "test".into(),
        event,
        profile: Profile::from([("email".to_string(), ADA.to_string())]),
        raw: serde_json::Value::Null,
    }
}

#[tokio::test]
async fn idp_events_drive_identity_center_and_an_unresolved_linked_offboarding_is_permanent() {
    let moto = std::env::var("GATEHOUSE_TEST_MOTO_URL")
        .expect("GATEHOUSE_TEST_MOTO_URL: run through scripts/with-servers.sh");
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing-secret\n",
    )
    .unwrap();
    let connect = AwsConnect {
        endpoint_url: Some(moto),
        region: Some("us-east-1".into()),
        profile: None,
        credentials_file: Some(creds),
    };
    let store_id = format!("d-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let client = IdentityCenter::connect(
        &connect,
        IdcSettings {
            identity_store_id: store_id.clone(),
            instance_arn: None,
            external_id_issuer: None,
            assignment_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(5),
        },
    )
    .await;

    // Seed moto: Ada and the group, as the IdP's SCIM and the infrastructure would.
    let raw = aws_sdk_identitystore::Client::from_conf(
        aws_sdk_identitystore::config::Builder::new()
            .behavior_version(aws_sdk_identitystore::config::BehaviorVersion::latest())
            .endpoint_url(connect.endpoint_url.clone().unwrap())
            .region(aws_sdk_identitystore::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_identitystore::config::Credentials::new(
                "testing",
                "testing-secret",
                None,
                None,
                "test",
            ))
            .build(),
    );
    let user_id = raw
        .create_user()
        .identity_store_id(&store_id)
        .user_name(ADA)
        .display_name("Ada Lovelace")
        .name(
            aws_sdk_identitystore::types::Name::builder()
                .given_name("Ada")
                .family_name("Lovelace")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .user_id()
        .to_string();
    raw.create_group()
        .identity_store_id(&store_id)
        .display_name("Data Analysts")
        .send()
        .await
        .unwrap();

    let policy = Policy::from_toml(
        "[[rule]]\nname = \"analysts\"\nwhen = { idp_group = \"Analysts\" }\nidentity_center.groups = [\"Data Analysts\"]\n",
    )
    .unwrap();
    let state = Sqlite::open(dir.path()).await.unwrap();
    let retry = RetryPolicy {
        retries: 2,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    };
    let target = IdentityCenterTarget {
        client,
        retry: retry.clone(),
    };
    let engine = Engine::new(
        state.clone(),
        None::<LookerClient>,
        Arc::new(policy.clone()),
        retry.clone(),
    )
    .with_target_in(target.clone(), Mode::Apply);

    let joined = engine
        .handle(&envelope(
            "e1",
            1,
            IdentityEvent::GroupMemberAdded {
                group: GroupRef {
                    id: "00g-an".into(),
                    name: "Analysts".into(),
                },
            },
        ))
        .await
        .unwrap();
    assert_eq!(joined, Handled::Applied { writes: 1 });
    assert_eq!(
        state
            .account_links("identity_center", "okta:00uada")
            .await
            .unwrap(),
        [user_id.as_str()]
    );
    let noop = engine
        .handle(&envelope("e2", 2, IdentityEvent::ProfileUpdated))
        .await
        .unwrap();
    assert_eq!(noop, Handled::NoOp { stale: false }, "converged: no call");

    // Drift by hand (the membership removed in Identity Center): reconcile in report mode
    // ledgers it and changes nothing; in enforce mode it puts it back.
    let membership = |raw: aws_sdk_identitystore::Client, store_id: String, user_id: String| async move {
        raw.list_group_memberships_for_member()
            .identity_store_id(store_id)
            .member_id(aws_sdk_identitystore::types::MemberId::UserId(user_id))
            .send()
            .await
            .unwrap()
            .group_memberships()
            .first()
            .map(|m| m.membership_id().to_string())
    };
    let m = membership(raw.clone(), store_id.clone(), user_id.clone())
        .await
        .unwrap();
    raw.delete_group_membership()
        .identity_store_id(&store_id)
        .membership_id(&m)
        .send()
        .await
        .unwrap();
    let reporting = Engine::new(
        state.clone(),
        None::<LookerClient>,
        Arc::new(policy.clone()),
        retry.clone(),
    )
    .with_target_in(target.clone(), Mode::Report);
    let r = reconcile::run(&reporting, &state, true, &LogProgress)
        .await
        .unwrap();
    assert_eq!((r.writes, r.reported), (0, 1));
    assert_eq!(
        membership(raw.clone(), store_id.clone(), user_id.clone()).await,
        None
    );
    let r = reconcile::run(&engine, &state, true, &LogProgress).await.unwrap();
    assert_eq!((r.writes, r.reported), (1, 0));
    assert!(
        membership(raw.clone(), store_id.clone(), user_id.clone())
            .await
            .is_some()
    );

    // The user is deleted outside Gatehouse; the deactivate cannot find the linked person.
    raw.delete_user()
        .identity_store_id(&store_id)
        .user_id(&user_id)
        .send()
        .await
        .unwrap();
    let e = engine
        .handle(&envelope("e3", 3, IdentityEvent::UserDeactivated))
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "dead-lettered, not retried: {e}");
    assert!(e.to_string().contains("unresolved offboarding"), "{e}");
}

/// Bad `[aws.identity_center]` configuration stops the start with exit 64, naming the field.
#[tokio::test]
async fn a_bad_identity_center_configuration_is_refused_naming_the_field() {
    use gatehouse_platform::config::Config;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(&path, "[aws.identity_center]\nidentity_store_id = \"store-1\"\n").unwrap();
    let e = Config::load(Some(&path), |_: &str| None).unwrap_err();
    assert_eq!(e.field, "aws.identity_center.identity_store_id", "{e}");

    std::fs::write(
        &path,
        "[aws.identity_center]\nidentity_store_id = \"d-1234567890\"\n",
    )
    .unwrap();
    let cfg = Config::load(Some(&path), |_: &str| None).unwrap();
    let policy = Policy::from_toml(
        "[[rule]]\nname = \"a\"\nwhen = \"everyone\"\nidentity_center.groups = [\"Admins\"]\n\n\
         [[identity_center.assignments]]\ngroup = \"Admins\"\naccount_id = \"111122223333\"\n\
         permission_set_arn = \"arn:aws:sso:::permissionSet/ssoins-1/ps-1\"\n",
    )
    .unwrap();
    let e = gatehouse_engine::app::identity_center_target(&cfg, &policy)
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 64);
    assert!(e.to_string().contains("aws.identity_center.instance_arn"), "{e}");
}
