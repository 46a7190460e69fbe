//! AWS IAM Identity Center through the one loop: the Identity Store against moto's
//! `identitystore` (`GATEHOUSE_TEST_MOTO_URL`: run through `scripts/with-servers.sh`), account
//! assignments against the test kit's `FakeSsoAdmin`, because moto 5.2.5's `sso-admin` answers
//! `CreateAccountAssignment` / `DescribeAccountAssignmentCreationStatus` without the `Status`
//! field AWS documents (so the status poll cannot be tested on it). Each test uses its own
//! identity store id, so they share moto safely.

use aws_sdk_identitystore::Client;
use aws_sdk_identitystore::config::{Builder, Credentials, Region};
use aws_sdk_identitystore::types::{Email, MemberId};
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::identity::{Identity, Membership, Stamp, Stamped, Status};
use gatehouse_domain::looker::ErrorKind;
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::StateStore;
use gatehouse_domain::target::SendAll;
use gatehouse_store::sqlite::Sqlite;
use gatehouse_targets::client::identity_center::{IdcSettings, IdentityCenter};
use gatehouse_targets::identity_center::IdentityCenterTarget;
use gatehouse_targets::{Applied, Ctx, Mode, Registered, RetryPolicy, Run, TargetFailure};
use gatehouse_testkit::sso_admin_fake::FakeSsoAdmin;
use std::time::Duration;

const ADA: &str = "ada@example.com";
const ACCOUNT: &str = "111122223333";
const PS: &str = "arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-analysts";

fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: the identity center tests need moto. Run \
             scripts/with-servers.sh cargo test ..."
        )
    })
}

fn store_client() -> Client {
    let conf = Builder::new()
        .behavior_version(aws_sdk_identitystore::config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing-secret", None, None, "test"))
        .retry_config(aws_sdk_identitystore::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

fn admin_client(url: &str) -> aws_sdk_ssoadmin::Client {
    let conf = aws_sdk_ssoadmin::config::Builder::new()
        .behavior_version(aws_sdk_ssoadmin::config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ssoadmin::config::Credentials::new(
            "testing",
            "testing-secret",
            None,
            None,
            "test",
        ))
        .retry_config(aws_sdk_ssoadmin::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_ssoadmin::Client::from_conf(conf)
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

fn policy(delete_user: bool) -> Policy {
    Policy::from_toml(&format!(
        r#"
[[rule]]
name = "analysts"
when = {{ idp_group = "Analysts" }}
identity_center.groups = ["Data Analysts"]

[[rule]]
name = "admins"
when = {{ idp_group = "Admins" }}
identity_center.groups = ["Admins"]

[[identity_center.assignments]]
group = "Data Analysts"
account_id = "{ACCOUNT}"
permission_set_arn = "{PS}"

[identity_center.offboarding]
delete_user = {delete_user}
"#
    ))
    .unwrap()
}

fn person(status: Status, groups: &[&str]) -> Identity {
    let stamp = Stamp {
        at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        id: EnvelopeId("e".into()),
    };
    let mut p = Identity::new("okta:00uada");
    p.status = status;
    p.profile.insert(
        "email".into(),
        Stamped {
            value: ADA.into(),
            stamp: stamp.clone(),
            source: None,
        },
    );
    for g in groups {
        p.groups.insert(
            format!("00g-{g}"),
            Membership {
                name: (*g).into(),
                member: true,
                stamp: stamp.clone(),
                source: None,
            },
        );
    }
    p
}

/// One identity store in moto: Ada, the two managed groups and one Gatehouse does not manage
/// (Ada is in it), and the target over it (assignments on the fake).
struct World {
    raw: Client,
    store_id: String,
    user_id: String,
    groups: [(String, String); 3],
    admin: FakeSsoAdmin,
    target: IdentityCenterTarget,
    state: Sqlite,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> Self {
        let raw = store_client();
        let store_id = format!("d-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
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
            .emails(Email::builder().value(ADA).primary(true).build())
            .send()
            .await
            .unwrap()
            .user_id()
            .to_string();
        let mut groups = Vec::new();
        for name in ["Data Analysts", "Admins", "Unmanaged"] {
            let id = raw
                .create_group()
                .identity_store_id(&store_id)
                .display_name(name)
                .send()
                .await
                .unwrap()
                .group_id()
                .to_string();
            groups.push((name.to_string(), id));
        }
        raw.create_group_membership()
            .identity_store_id(&store_id)
            .group_id(&groups[2].1)
            .member_id(MemberId::UserId(user_id.clone()))
            .send()
            .await
            .unwrap();
        let admin = FakeSsoAdmin::start().await;
        admin.polls_until_done(2);
        let client = IdentityCenter::from_clients(
            store_client(),
            admin_client(&admin.url()),
            IdcSettings {
                identity_store_id: store_id.clone(),
                instance_arn: Some(FakeSsoAdmin::INSTANCE_ARN.into()),
                external_id_issuer: None,
                assignment_timeout: Duration::from_secs(30),
                poll_interval: Duration::from_millis(5),
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let state = Sqlite::open(dir.path()).await.unwrap();
        World {
            raw,
            store_id,
            user_id,
            groups: groups.try_into().unwrap(),
            admin,
            target: IdentityCenterTarget {
                client,
                retry: retry(),
            },
            state,
            _dir: dir,
        }
    }

    async fn converge(&self, policy: &Policy, who: &Identity, mode: Mode) -> Result<Applied, TargetFailure> {
        let ctx = Ctx {
            envelope_id: "env-1".into(),
            subject: who.key.clone(),
            event: "test".into(),
            email: Some(ADA.into()),
            actor: "event:test".into(),
            policy_digest: None,
            lease: None,
        };
        let run = Run {
            store: &self.state,
            ctx: &ctx,
            retry: &retry(),
            screen: &SendAll,
        };
        let now: DateTime<Utc> = gatehouse_domain::clock::now();
        Registered::<Sqlite>::converge(&self.target, policy, who, now, mode, &run).await
    }

    /// The DisplayNames of Ada's groups, as moto holds them.
    async fn groups_of_ada(&self) -> Vec<String> {
        let page = self
            .raw
            .list_group_memberships_for_member()
            .identity_store_id(&self.store_id)
            .member_id(MemberId::UserId(self.user_id.clone()))
            .send()
            .await
            .unwrap();
        let mut names: Vec<String> = page
            .group_memberships()
            .iter()
            .filter_map(|m| m.group_id())
            .filter_map(|id| self.groups.iter().find(|(_, g)| g == id).map(|(n, _)| n.clone()))
            .collect();
        names.sort();
        names
    }

    /// (action, status) of every identity_center ledger row.
    async fn rows(&self) -> Vec<(String, String)> {
        self.state
            .ledger_since(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.target == "identity_center")
            .map(|r| {
                let action = r
                    .entry
                    .call
                    .body
                    .as_ref()
                    .and_then(|b| b.get("X-Amz-Target"))
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                (action, r.entry.status)
            })
            .collect()
    }
}

fn rows(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, s)| (a.to_string(), s.to_string())).collect()
}

#[tokio::test]
async fn joins_add_memberships_and_assignments_once_and_leaves_remove_only_managed_ones() {
    let w = World::new().await;
    let p = policy(false);
    let ada = person(Status::Active, &["Analysts", "Admins"]);

    // `gatehouse plan`: every call, screened, and nothing changed (no link stored either).
    let calls = Registered::<Sqlite>::plan_calls(
        &w.target,
        &p,
        &ada,
        gatehouse_domain::clock::now(),
        &w.state,
        &SendAll,
    )
    .await
    .unwrap();
    let mut actions: Vec<_> = calls
        .iter()
        .map(|c| {
            assert_eq!(c.target, "identity_center");
            assert_eq!(c.withheld, None);
            c.call.body.as_ref().unwrap()["X-Amz-Target"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            "AWSIdentityStore.CreateGroupMembership",
            "AWSIdentityStore.CreateGroupMembership",
            "SWBExternalService.CreateAccountAssignment"
        ]
    );
    assert!(
        w.state
            .account_links("identity_center", &ada.key)
            .await
            .unwrap()
            .is_empty()
    );

    // Report mode writes nothing and says what it would do.
    let r = w.converge(&p, &ada, Mode::Report).await.unwrap();
    assert_eq!(r.reported, 3);
    assert_eq!(w.groups_of_ada().await, ["Unmanaged"]);

    // Onboarding: both memberships and the analysts' assignment (polled until it succeeded).
    let r = w.converge(&p, &ada, Mode::Apply).await.unwrap();
    assert_eq!(r.writes, 3);
    assert_eq!(w.groups_of_ada().await, ["Admins", "Data Analysts", "Unmanaged"]);
    let analysts = &w.groups[0].1;
    assert_eq!(
        w.admin.assignments().into_iter().collect::<Vec<_>>(),
        [(
            ACCOUNT.to_string(),
            PS.to_string(),
            "GROUP".to_string(),
            analysts.clone()
        )]
    );
    assert!(
        w.admin
            .calls()
            .iter()
            .filter(|c| *c == "DescribeAccountAssignmentCreationStatus")
            .count()
            >= 2,
        "the creation was polled until it left IN_PROGRESS: {:?}",
        w.admin.calls()
    );
    // The person is linked to their Identity Store user.
    assert_eq!(
        w.state.account_links("identity_center", &ada.key).await.unwrap(),
        [w.user_id.as_str()]
    );
    let after_join = w.rows().await.len();

    // A second run writes nothing.
    let r = w.converge(&p, &ada, Mode::Apply).await.unwrap();
    assert_eq!(r, Applied::default());
    assert_eq!(w.rows().await.len(), after_join, "no call, no row");

    // A rule change (Ada leaves the IdP's Admins group) removes that one membership.
    let ada = person(Status::Active, &["Analysts"]);
    let r = w.converge(&p, &ada, Mode::Apply).await.unwrap();
    assert_eq!(r.writes, 1);
    assert_eq!(w.groups_of_ada().await, ["Data Analysts", "Unmanaged"]);
    assert_eq!(
        w.rows().await[after_join..],
        rows(&[("DeleteGroupMembership", "200")])
    );

    // Offboarding removes every managed membership; the unmanaged one and the user stay
    // (delete_user is off by default).
    let gone = person(Status::Deactivated, &["Analysts"]);
    let r = w.converge(&p, &gone, Mode::Apply).await.unwrap();
    assert_eq!(r.writes, 1);
    assert_eq!(w.groups_of_ada().await, ["Unmanaged"]);
    assert!(w.target.client.user(&w.user_id).await.unwrap().is_some());
    assert_eq!(
        w.converge(&p, &gone, Mode::Apply).await.unwrap(),
        Applied::default()
    );
    // The group's assignment is the group's: offboarding a person leaves it.
    assert_eq!(w.admin.assignments().len(), 1);
}

#[tokio::test]
async fn offboarding_with_delete_user_removes_memberships_then_the_user() {
    let w = World::new().await;
    let ada = person(Status::Active, &["Analysts", "Admins"]);
    w.converge(&policy(true), &ada, Mode::Apply).await.unwrap();
    let joined = w.rows().await.len();

    let gone = person(Status::Deactivated, &[]);
    let r = w.converge(&policy(true), &gone, Mode::Apply).await.unwrap();
    assert_eq!(r.writes, 3);
    let rows = w.rows().await[joined..].to_vec();
    assert_eq!(
        rows.last(),
        Some(&("DeleteUser".to_string(), "200".to_string())),
        "the user goes last: {rows:?}"
    );
    assert_eq!(rows.len(), 3);
    assert!(w.target.client.user(&w.user_id).await.unwrap().is_none());
    // Done is done: the linked user being gone is what was asked, not an error.
    assert_eq!(
        w.converge(&policy(true), &gone, Mode::Apply).await.unwrap(),
        Applied::default()
    );
}

#[tokio::test]
async fn an_offboarding_of_a_linked_person_whose_user_is_gone_is_a_permanent_failure() {
    let w = World::new().await;
    let p = policy(false);
    w.converge(&p, &person(Status::Active, &["Admins"]), Mode::Apply)
        .await
        .unwrap();
    // Someone deletes the user outside Gatehouse; the same email now names a new user.
    w.raw
        .delete_user()
        .identity_store_id(&w.store_id)
        .user_id(&w.user_id)
        .send()
        .await
        .unwrap();
    w.raw
        .create_user()
        .identity_store_id(&w.store_id)
        .user_name(ADA)
        .display_name("Someone Else")
        .name(
            aws_sdk_identitystore::types::Name::builder()
                .given_name("Some")
                .family_name("One")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let e = w
        .converge(&p, &person(Status::Deactivated, &[]), Mode::Apply)
        .await
        .unwrap_err();
    match &e {
        TargetFailure::Target { kind, .. } => assert_eq!(*kind, ErrorKind::Permanent, "{e}"),
        other => panic!("not a target failure: {other}"),
    }
    assert!(e.to_string().contains("unresolved offboarding"), "{e}");
}

#[tokio::test]
async fn a_failed_assignment_is_a_permanent_error_with_awss_reason_in_the_ledger() {
    let w = World::new().await;
    w.admin.fail_permission_set(PS);
    let e = w
        .converge(
            &policy(false),
            &person(Status::Active, &["Analysts"]),
            Mode::Apply,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            TargetFailure::Target {
                kind: ErrorKind::Permanent,
                ..
            }
        ),
        "{e}"
    );
    let rows = w.rows().await;
    assert!(
        rows.iter().any(|(a, s)| a == "CreateAccountAssignment"
            && s.contains("failed: the permission set could not be provisioned")),
        "{rows:?}"
    );
    assert!(w.admin.assignments().is_empty());
}
