//! The target contract against the real clients: Looker against the fake Looker, AWS IAM
//! against moto (`GATEHOUSE_TEST_MOTO_URL`: run through `scripts/with-servers.sh`), GCP IAM
//! against the test kit's fake.

use crate::contract::{Harness, contract};
use aws_sdk_iam::Client;
use aws_sdk_iam::config::{Builder, Credentials, Region};
use gatehouse_domain::cloud::{AwsUserKey, AwsUserMapping, DesiredAws, DesiredGcp, KeyAction};
use gatehouse_domain::policy::{DesiredLooker, GcpGrant, Presence};
use gatehouse_targets::RetryPolicy;
use gatehouse_targets::aws_iam::AwsTarget;
use gatehouse_targets::client::aws_iam::AwsIam;
use gatehouse_targets::client::gcp_iam::{GcpIam, GcpIamConfig, TokenSource};
use gatehouse_targets::client::looker::{LookerClient, LookerConfig};
use gatehouse_targets::gcp_iam::GcpTarget;
use gatehouse_targets::looker::LookerTarget;
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::gcp_iam_fake::FakeGcpIam;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn retry() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

/// Unique per test run (moto is shared by every test).
fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

struct Looker {
    fake: FakeLooker,
    group_id: String,
    target: LookerTarget<LookerClient>,
}

const ADA: &str = "ada@example.com";

impl Looker {
    async fn new() -> Self {
        let fake = FakeLooker::start().await;
        let group_id = fake.add_group("Engineers");
        let client = LookerClient::new(LookerConfig {
            base_url: fake.base_url(),
            client_id: fake.client_id().to_string(),
            client_secret: fake.client_secret().to_string().into(),
            timeout: Duration::from_secs(10),
            catalog_ttl: Duration::ZERO,
            max_concurrent_calls: gatehouse_targets::client::looker::DEFAULT_MAX_CONCURRENT_CALLS,
        })
        .unwrap();
        Looker {
            fake,
            group_id,
            target: LookerTarget::new(Some(client), retry()),
        }
    }

    fn desired(&self, presence: Presence, groups: &[&str]) -> DesiredLooker {
        DesiredLooker {
            email: Some(ADA.into()),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            presence,
            groups: groups
                .iter()
                .map(|g| (g.to_string(), "eng".to_string()))
                .collect(),
            roles: BTreeMap::new(),
            attributes: BTreeMap::new(),
            managed_groups: BTreeSet::from(["Engineers".to_string()]),
            managed_roles: BTreeSet::new(),
            managed_attributes: BTreeSet::new(),
        }
    }
}

impl Harness for Looker {
    type T = LookerTarget<LookerClient>;
    fn target(&self) -> &Self::T {
        &self.target
    }
    /// Ada does not exist yet: create (first), then add to the group.
    fn granted(&self) -> DesiredLooker {
        self.desired(Presence::Active { create: true }, &["Engineers"])
    }
    fn revoked(&self) -> DesiredLooker {
        self.desired(
            Presence::Offboarded {
                disable: true,
                revoke_sessions: true,
                revoke_api_keys: true,
                delete_after_days: None,
            },
            &[],
        )
    }
    async fn holds(&self) -> bool {
        self.fake
            .user_by_email(ADA)
            .is_some_and(|u| !u.is_disabled && u.group_ids.contains(&self.group_id))
    }
}

#[tokio::test]
async fn looker_passes_the_target_contract() {
    let h = Looker::new().await;
    contract(&h).await;
    // The plan created Ada once (create before add), and offboarding closed her sessions.
    assert_eq!(
        h.fake
            .users()
            .iter()
            .filter(|u| u.email.as_deref() == Some(ADA))
            .count(),
        1
    );
}

fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: the AWS IAM contract needs moto. Run \
             scripts/with-servers.sh cargo test -p gatehouse-targets --test it"
        )
    })
}

struct Aws {
    sdk: Client,
    user: String,
    group: String,
    target: AwsTarget,
}

impl Aws {
    async fn new() -> Self {
        let conf = Builder::new()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .endpoint_url(moto_url())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        let sdk = Client::from_conf(conf);
        let run = run_id();
        let (user, group) = (format!("ada-{run}"), format!("eng-{run}"));
        sdk.create_user().user_name(&user).send().await.unwrap();
        sdk.create_group().group_name(&group).send().await.unwrap();
        let target = AwsTarget {
            iam: AwsIam::from_client(sdk.clone()),
            mapping: AwsUserMapping::Template {
                template: "{local}".into(),
            },
            retry: retry(),
        };
        Aws {
            sdk,
            user,
            group,
            target,
        }
    }

    fn desired(&self, offboarded: bool) -> DesiredAws {
        DesiredAws {
            user: AwsUserKey::Name(self.user.clone()),
            offboarded,
            groups: if offboarded {
                BTreeMap::new()
            } else {
                BTreeMap::from([(self.group.clone(), "eng-cloud".to_string())])
            },
            managed_groups: BTreeSet::from([self.group.clone()]),
            tags: BTreeMap::new(),
            managed_tags: BTreeSet::new(),
            keys: KeyAction::Keep,
            delete_login_profile: false,
            sweep: Default::default(),
        }
    }
}

impl Harness for Aws {
    type T = AwsTarget;
    fn target(&self) -> &AwsTarget {
        &self.target
    }
    fn granted(&self) -> DesiredAws {
        self.desired(false)
    }
    fn revoked(&self) -> DesiredAws {
        self.desired(true)
    }
    async fn holds(&self) -> bool {
        self.sdk
            .list_groups_for_user()
            .user_name(&self.user)
            .send()
            .await
            .unwrap()
            .groups()
            .iter()
            .any(|g| g.group_name() == self.group)
    }
}

#[tokio::test]
async fn aws_iam_passes_the_target_contract() {
    let h = Aws::new().await;
    contract(&h).await;
}

struct Gcp {
    fake: FakeGcpIam,
    resource: String,
    target: GcpTarget,
}

const MEMBER: &str = "user:ada@example.com";
const ROLE: &str = "roles/viewer";

impl Gcp {
    async fn new() -> Self {
        let fake = FakeGcpIam::start().await;
        let resource = "projects/contract".to_string();
        // Someone else's grant on the same role, which must survive every write.
        fake.add_resource(
            &resource,
            serde_json::json!([{ "role": ROLE, "members": ["user:grace@example.com"] }]),
        );
        let b = fake.base_url();
        let iam = GcpIam::new(GcpIamConfig {
            resource_manager_url: b.clone(),
            bigquery_url: b.clone(),
            iam_url: b,
            token: TokenSource::Static(fake.token().into()),
            timeout: Duration::from_secs(10),
        })
        .unwrap();
        // No group is managed here: the groups client is never called.
        let groups = gatehouse_targets::client::cloud_identity::CloudIdentity::new(
            gatehouse_targets::client::cloud_identity::CloudIdentityConfig {
                url: fake.base_url(),
                token: TokenSource::Static(fake.token().into()),
                timeout: Duration::from_secs(10),
                page_size: 100,
            },
        )
        .unwrap();
        Gcp {
            fake,
            resource,
            target: GcpTarget {
                groups,
                iam,
                retry: retry(),
                conflict_retries: 3,
            },
        }
    }

    fn desired(&self, offboarded: bool) -> DesiredGcp {
        let grant = GcpGrant {
            resource: self.resource.clone(),
            role: ROLE.into(),
        };
        DesiredGcp {
            member: MEMBER.into(),
            offboarded,
            bindings: if offboarded {
                BTreeMap::new()
            } else {
                BTreeMap::from([(grant.clone(), "eng-cloud".to_string())])
            },
            managed: BTreeSet::from([grant]),
            former_members: Vec::new(),
            groups: BTreeMap::new(),
            managed_groups: BTreeSet::new(),
            previous_emails: Vec::new(),
        }
    }
}

impl Harness for Gcp {
    type T = GcpTarget;
    fn target(&self) -> &GcpTarget {
        &self.target
    }
    fn granted(&self) -> DesiredGcp {
        self.desired(false)
    }
    fn revoked(&self) -> DesiredGcp {
        self.desired(true)
    }
    async fn holds(&self) -> bool {
        self.fake
            .members(&self.resource, ROLE)
            .iter()
            .any(|m| m == MEMBER)
    }
}

#[tokio::test]
async fn gcp_iam_passes_the_target_contract() {
    let h = Gcp::new().await;
    contract(&h).await;
    assert_eq!(
        h.fake.members(&h.resource, ROLE),
        ["user:grace@example.com"],
        "other members are kept"
    );
}

/// Issue 16: a member linked to the person before (an earlier email the directory may no longer
/// know) leaves the managed binding, in the same setIamPolicy that grants the current member;
/// the current member is what the read links.
#[tokio::test]
async fn gcp_removes_the_member_linked_before_and_links_the_current_one() {
    use gatehouse_domain::target::{Link, Target};
    let h = Gcp::new().await;
    h.fake.add_resource(
        &h.resource,
        serde_json::json!([{ "role": ROLE, "members": ["user:ada.old@example.com", "user:grace@example.com"] }]),
    );
    let d = h.desired(false);
    let link = Link {
        person: "p".into(),
        accounts: vec!["user:ada.old@example.com".into()],
        previous_emails: Vec::new(),
        profile: Default::default(),
    };
    let actual = h.target.read(&d, &link).await.unwrap();
    assert_eq!(h.target.linked(&actual), vec![MEMBER.to_string()]);
    let plan = h.target.diff(&d, &actual);
    assert_eq!(plan.steps.len(), 2, "{plan:?}");
    let ops: Vec<_> = plan.steps.iter().map(|s| &s.op).collect();
    h.fake.reset_calls();
    h.target.send(&(), &ops).await.unwrap();
    assert_eq!(h.fake.count("setIamPolicy"), 1);
    let mut members = h.fake.members(&h.resource, ROLE);
    members.sort();
    assert_eq!(members, ["user:ada@example.com", "user:grace@example.com"]);
}
