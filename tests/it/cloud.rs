//! Cloud IAM end to end: one offboarding event closes Looker (fake), AWS IAM (moto) and GCP IAM
//! (the test kit's fake); drift made by hand is found by reconcile and reverted (enforce) or only
//! ledgered (report); a CloudDrift envelope reconciles just that person. Needs moto
//! (`GATEHOUSE_TEST_MOTO_URL`, started by `make test`).

use aws_sdk_iam::Client;
use aws_sdk_iam::config::{Builder, Credentials, Region};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::ports::QueueProducer;
use gatehouse_e2e::{Options, TestApp, example_policy, okta_fixture, seed_catalog, spawn_app};
use gatehouse_engine::reconcile::{self, LogProgress, Report};
use gatehouse_platform::config::Config;
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::gcp_iam_fake::FakeGcpIam;
use serde_json::json;
use std::collections::BTreeSet;

const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";
const BATCH: &str = "event-hook.batch.create-activate-groupadd.constructed.json";
const COND: &str = "request.time < timestamp('2030-01-01T00:00:00Z')";

fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: the cloud IAM tests need moto. Run `make test` \
             or scripts/with-servers.sh cargo test -p gatehouse-e2e --test it cloud"
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

/// Names unique to one test run (moto is shared by every test).
struct World {
    run: String,
    project: String,
    eng: String,
    ops: String,
    hand: String,
}

impl World {
    fn new() -> Self {
        let run = format!("{:08x}", rand_u32());
        World {
            project: format!("projects/p-{run}"),
            eng: format!("eng-{run}"),
            ops: format!("ops-{run}"),
            hand: format!("hand-{run}"),
            run,
        }
    }

    fn user(&self, local: &str) -> String {
        format!("{local}-{}", self.run)
    }

    /// The example Looker policy plus cloud grants for Engineering.
    fn policy(&self) -> String {
        format!(
            "{}\n[[rule]]\nname = \"eng-cloud\"\nwhen = {{ idp_group = \"Engineering\" }}\n\
             aws_groups = [{:?}]\ngcp_bindings = [{{ resource = {:?}, role = \"roles/viewer\" }}]\n\
             [[rule]]\nname = \"ops-cloud\"\nwhen = {{ idp_group = \"Ops\" }}\naws_groups = [{:?}]\n\
             gcp_bindings = [{{ resource = {:?}, role = \"roles/editor\" }}]\n",
            example_policy(),
            self.eng,
            self.project,
            self.ops,
            self.project
        )
    }

    /// `[aws]` and `[gcp]` sections pointing at moto and the fake.
    fn toml(&self, dir: &std::path::Path, gcp: &FakeGcpIam) -> String {
        let creds = dir.join(format!("aws-credentials-{}", self.run));
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
        )
        .unwrap();
        format!(
            "[aws]\nenabled = true\nuser_mapping = {{ template = \"{{local}}-{}\" }}\nendpoint_url = {:?}\n\
             region = \"us-east-1\"\ncredentials_file = {:?}\n\
             [identity]\nallowed_email_domains = [\"example.com\"]\n{}",
            self.run,
            moto_url(),
            creds.display().to_string(),
            gcp.toml()
        )
    }

    async fn create_user(&self, c: &Client, local: &str, groups: &[&str]) -> String {
        let name = self.user(local);
        c.create_user().user_name(&name).send().await.unwrap();
        for g in groups {
            c.add_user_to_group()
                .user_name(&name)
                .group_name(*g)
                .send()
                .await
                .unwrap();
        }
        name
    }
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

async fn spawn(w: &World, gcp: &FakeGcpIam, looker: Option<FakeLooker>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let extra = w.toml(dir.path(), gcp);
    let app = spawn_app(Options {
        looker,
        policy: Some(w.policy()),
        extra_toml: extra,
        ..Default::default()
    })
    .await;
    // keep the credentials file alive with the app
    std::mem::forget(dir);
    app
}

/// Run `gatehouse reconcile --apply` against the app's data, with extra config appended.
async fn reconcile(app: &TestApp, extra: &str) -> Report {
    let text = std::fs::read_to_string(app.dir.path().join("gatehouse.toml")).unwrap();
    let path = app.dir.path().join("reconcile.toml");
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
    let cfg = Config::load(Some(&path), |_| None).unwrap();
    let state = gatehouse_store::state::AnyState::Sqlite(app.store.clone());
    let engine = gatehouse_app::engine_with_cloud(&cfg, state).await.unwrap();
    reconcile::run(&engine, &app.store, true, &LogProgress)
        .await
        .unwrap()
}

fn gcp_resource(gcp: &FakeGcpIam, w: &World, viewer: &[&str]) {
    gcp.add_resource(
        &w.project,
        json!([
            { "role": "roles/viewer", "members": viewer },
            { "role": "roles/viewer", "members": ["user:john.doe@example.com", "user:isaac.brock@example.com"],
              "condition": { "title": "until 2030", "expression": COND } },
            { "role": "roles/owner", "members": ["user:boss@example.com"] },
        ]),
    );
}

fn unmanaged_intact(gcp: &FakeGcpIam, w: &World) {
    let p = gcp.policy(&w.project).unwrap();
    let cond = p["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b.get("condition").is_some())
        .unwrap();
    assert_eq!(
        cond["members"],
        json!(["user:john.doe@example.com", "user:isaac.brock@example.com"]),
        "conditional binding untouched: {p}"
    );
    assert_eq!(
        gcp.members(&w.project, "roles/owner"),
        vec!["user:boss@example.com"]
    );
    assert!(p["auditConfigs"].is_array());
}

#[tokio::test]
async fn one_deactivate_event_closes_looker_aws_and_gcp() {
    let w = World::new();
    let c = iam();
    for g in [&w.eng, &w.ops, &w.hand] {
        c.create_group().group_name(g).send().await.unwrap();
    }
    let user = w.create_user(&c, "john.doe", &[&w.eng, &w.hand]).await;
    c.create_login_profile()
        .user_name(&user)
        .password("Passw0rd!xyz")
        .send()
        .await
        .unwrap();
    c.create_access_key().user_name(&user).send().await.unwrap();
    c.upload_ssh_public_key()
        .user_name(&user)
        .ssh_public_key_body(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM0Kda1A5NPUjUPUjd+aFBrHpLRqdmc2gUU/QbHOLD5T test",
        )
        .send()
        .await
        .unwrap();
    let gcp = FakeGcpIam::start().await;
    gcp_resource(&gcp, &w, &["user:john.doe@example.com", "group:all@example.com"]);
    let looker = FakeLooker::start().await;
    seed_catalog(&looker);
    let uid = looker.add_user("john.doe@example.com", "John", "Doe");
    looker.add_session(&uid);
    let app = spawn(&w, &gcp, Some(looker.clone())).await;

    app.deliver(&okta_fixture(DEACTIVATE)).await;

    // Looker
    let u = looker.user(&uid).unwrap();
    assert!(u.is_disabled && u.session_ids.is_empty());
    // AWS: managed group gone, the hand-managed one kept, key inactive, no console password.
    assert_eq!(groups_of(&c, &user).await, [w.hand.clone()].into());
    let keys = c.list_access_keys().user_name(&user).send().await.unwrap();
    assert!(
        keys.access_key_metadata()
            .iter()
            .all(|k| k.status().map(|s| s.as_str()) == Some("Inactive"))
    );
    assert!(
        c.get_login_profile().user_name(&user).send().await.is_err(),
        "login profile deleted"
    );
    // The leaver sweep (defaults): SSH key deactivated, older STS sessions denied.
    let ssh = c.list_ssh_public_keys().user_name(&user).send().await.unwrap();
    assert_eq!(ssh.ssh_public_keys()[0].status().as_str(), "Inactive");
    let inline = c.list_user_policies().user_name(&user).send().await.unwrap();
    assert_eq!(
        inline.policy_names(),
        ["gatehouse-offboarding-deny-older-sessions".to_string()]
    );
    // GCP: only the managed unconditional binding lost the person.
    assert_eq!(
        gcp.members(&w.project, "roles/viewer"),
        vec!["group:all@example.com"]
    );
    unmanaged_intact(&gcp, &w);
    // The ledger has every call, each with its target.
    let ledger = app.ledger().await;
    let targets: BTreeSet<&str> = ledger.iter().map(|r| r.entry.target.as_str()).collect();
    assert_eq!(targets, ["aws", "gcp", "looker"].into(), "{ledger:#?}");
    let aws_actions: BTreeSet<String> = ledger
        .iter()
        .filter(|r| r.entry.target == "aws")
        .map(|r| {
            r.entry.call.body.as_ref().unwrap()["Action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        aws_actions,
        [
            "DeleteLoginProfile",
            "PutUserPolicy",
            "RemoveUserFromGroup",
            "UpdateAccessKey",
            "UpdateSSHPublicKey"
        ]
        .map(String::from)
        .into()
    );
    assert!(
        ledger
            .iter()
            .filter(|r| r.entry.target != "looker")
            .all(|r| r.entry.status == "200")
    );

    // A replay changes nothing and calls nothing.
    gcp.reset_calls();
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    assert_eq!(gcp.calls().len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn drift_is_reverted_in_enforce_mode_and_only_reported_in_report_mode() {
    let w = World::new();
    let c = iam();
    for g in [&w.eng, &w.ops, &w.hand] {
        c.create_group().group_name(g).send().await.unwrap();
    }
    let isaac = w.create_user(&c, "isaac.brock", &[]).await;
    let gcp = FakeGcpIam::start().await;
    gcp_resource(&gcp, &w, &["group:all@example.com"]);
    let app = spawn(&w, &gcp, None).await;

    // Onboarding (create, activate, join Engineering) grants the AWS group and the GCP binding.
    app.deliver(&okta_fixture(BATCH)).await;
    assert_eq!(groups_of(&c, &isaac).await, [w.eng.clone()].into());
    let viewers = |g: &FakeGcpIam| g.members(&w.project, "roles/viewer");
    assert_eq!(
        viewers(&gcp),
        vec!["group:all@example.com", "user:isaac.brock@example.com"]
    );

    // Drift by hand: out of eng, into ops (managed) and hand (unmanaged); GCP editor granted.
    let drift = |c: Client, isaac: String| {
        let (eng, ops, hand) = (w.eng.clone(), w.ops.clone(), w.hand.clone());
        async move {
            c.remove_user_from_group()
                .user_name(&isaac)
                .group_name(&eng)
                .send()
                .await
                .unwrap();
            c.add_user_to_group()
                .user_name(&isaac)
                .group_name(&ops)
                .send()
                .await
                .unwrap();
            c.add_user_to_group()
                .user_name(&isaac)
                .group_name(&hand)
                .send()
                .await
                .unwrap();
        }
    };
    drift(c.clone(), isaac.clone()).await;
    gcp.grant_by_hand(&w.project, "roles/editor", "user:isaac.brock@example.com");
    gcp.grant_by_hand(&w.project, "roles/editor", "user:hand@example.com");

    // Report mode: found, ledgered, nothing changed.
    let r = reconcile(
        &app,
        "[reconcile]\nmode = { aws = \"report\", gcp = \"report\" }\n",
    )
    .await;
    assert_eq!(r.plans.len(), 1, "{r:#?}");
    // Three drifts of isaac's, and the orphan member hand@example.com's managed editor binding
    // (issue 15: ledgered as an orphan, `[reconcile] orphans = "report"` by default).
    assert_eq!((r.writes, r.reported), (0, 4), "{r:#?}");
    assert_eq!(
        groups_of(&c, &isaac).await,
        [w.ops.clone(), w.hand.clone()].into()
    );
    assert!(
        gcp.members(&w.project, "roles/editor")
            .contains(&"user:isaac.brock@example.com".to_string())
    );
    let reported: Vec<_> = app
        .ledger()
        .await
        .into_iter()
        .filter(|r| r.entry.status == "drift_reported" && r.entry.rule != "reconcile.orphans")
        .collect();
    assert_eq!(reported.len(), 3, "{reported:#?}");
    assert!(app.metrics().await.contains("gatehouse_drift_reported_total"));

    // Enforce mode: reverted; unmanaged group, member and conditional binding untouched.
    let r = reconcile(&app, "").await;
    assert_eq!(r.writes, 3, "{r:#?}");
    assert_eq!(
        groups_of(&c, &isaac).await,
        [w.eng.clone(), w.hand.clone()].into()
    );
    assert_eq!(
        gcp.members(&w.project, "roles/editor"),
        vec!["user:hand@example.com"]
    );
    assert_eq!(
        viewers(&gcp),
        vec!["group:all@example.com", "user:isaac.brock@example.com"]
    );
    unmanaged_intact(&gcp, &w);
    // Converged: the next reconcile finds nothing.
    let r = reconcile(&app, "").await;
    assert!(r.plans.is_empty(), "{r:#?}");
    assert_eq!(r.reads.gcp, 1, "one getIamPolicy per managed resource");
    app.stop().await;
}

#[tokio::test]
async fn a_cloud_drift_envelope_reconciles_just_that_person() {
    let w = World::new();
    let c = iam();
    for g in [&w.eng, &w.ops, &w.hand] {
        c.create_group().group_name(g).send().await.unwrap();
    }
    let isaac = w.create_user(&c, "isaac.brock", &[]).await;
    let gcp = FakeGcpIam::start().await;
    gcp_resource(&gcp, &w, &["group:all@example.com"]);
    let app = spawn(&w, &gcp, None).await;
    app.deliver(&okta_fixture(BATCH)).await;
    assert_eq!(groups_of(&c, &isaac).await, [w.eng.clone()].into());

    // Hand changes to isaac (managed) and to someone Gatehouse does not know.
    c.remove_user_from_group()
        .user_name(&isaac)
        .group_name(&w.eng)
        .send()
        .await
        .unwrap();
    gcp.grant_by_hand(&w.project, "roles/editor", "user:isaac.brock@example.com");
    gcp.grant_by_hand(&w.project, "roles/editor", "user:stranger@example.com");
    // While another writer races Gatehouse's read-modify-write (409 ABORTED → re-read).
    // (1st read: the plan; 2nd: the read-modify-write, which then meets a stale etag.)
    gcp.concurrent_write_after_get(&w.project, 2, "roles/owner", "user:racer@example.com");

    let env = Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("gcp:drift-{}", w.run)),
        source: Source::GcpAudit,
        subject: Subject {
            key: "gcp:user:isaac.brock@example.com".into(),
            email: Some("isaac.brock@example.com".into()),
            display_name: None,
        },
        occurred_at: gatehouse_domain::clock::now(),
        received_at: gatehouse_domain::clock::now(),
        event: IdentityEvent::CloudDrift {
            provider: "gcp".into(),
            action: "SetIamPolicy".into(),
        },
        profile: Default::default(),
        source_event_type: "SetIamPolicy".into(),
        raw: serde_json::Value::Null,
    };
    app.store.publish(&[env]).await.unwrap();
    app.drained().await;

    assert_eq!(
        groups_of(&c, &isaac).await,
        [w.eng.clone()].into(),
        "aws drift reverted"
    );
    assert_eq!(
        gcp.members(&w.project, "roles/editor"),
        vec!["user:stranger@example.com"]
    );
    assert_eq!(
        gcp.members(&w.project, "roles/owner"),
        vec!["user:boss@example.com", "user:racer@example.com"],
        "the concurrent writer's change survived the re-read"
    );
    let sets: Vec<_> = gcp
        .calls()
        .into_iter()
        .filter(|c| c.verb() == "setIamPolicy")
        .map(|c| c.status)
        .collect();
    assert!(sets.ends_with(&[409, 200]), "{sets:?}");
    let ledger = app.ledger().await;
    let drift_rows: Vec<_> = ledger
        .iter()
        .filter(|r| r.entry.envelope_id.starts_with("gcp:drift-"))
        .collect();
    assert!(
        drift_rows
            .iter()
            .all(|r| r.entry.subject != "gcp:user:stranger@example.com")
    );
    assert!(
        drift_rows.iter().any(|r| r.entry.status == "409")
            && drift_rows.iter().any(|r| r.entry.status == "200")
    );
    app.stop().await;
}

/// Issue 15: orphan accounts in the clouds — an IAM user made by hand in a managed group, a GCP
/// member bound to managed roles, both matching nobody in the directory. `report` (the default)
/// ledgers each orphan's offboarding plan as `drift_reported` and changes nothing; `disable`
/// sends it through the apply loop (the IAM user loses its managed group and its key is
/// deactivated, as an offboarding does; the member loses its managed bindings), and each disable
/// counts as an offboarding in the mass-change breaker: past its limit the rest is held until
/// released.
#[tokio::test]
async fn orphan_iam_users_and_gcp_members_are_reported_or_disabled_through_the_breaker() {
    use gatehouse_domain::ports::StateStore as _;
    let w = World::new();
    let c = iam();
    for g in [&w.eng, &w.ops, &w.hand] {
        c.create_group().group_name(g).send().await.unwrap();
    }
    let ghost = w.create_user(&c, "ghost", &[&w.eng, &w.hand]).await;
    let key = c
        .create_access_key()
        .user_name(&ghost)
        .send()
        .await
        .unwrap()
        .access_key()
        .unwrap()
        .access_key_id()
        .to_string();
    // In an unmanaged group only: not an orphan of ours.
    let stray = w.create_user(&c, "stray", &[&w.hand]).await;
    c.create_access_key().user_name(&stray).send().await.unwrap();
    let member = "user:ghost@elsewhere.example";
    let gcp = FakeGcpIam::start().await;
    gcp_resource(&gcp, &w, &["group:all@example.com", member]);
    gcp.grant_by_hand(&w.project, "roles/editor", member);
    let app = spawn(&w, &gcp, None).await;
    let key_status = |c: Client, user: String| async move {
        c.list_access_keys()
            .user_name(&user)
            .send()
            .await
            .unwrap()
            .access_key_metadata()
            .iter()
            .map(|k| k.status().map(|s| s.as_str().to_string()).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let orphan_rows = |ledger: &[gatehouse_domain::ports::LedgerRow], subject: &str, status: &str| {
        ledger
            .iter()
            .filter(|r| r.entry.subject == subject && r.entry.status == status)
            .map(|r| {
                assert_eq!(r.entry.rule, "reconcile.orphans", "{r:#?}");
                assert_eq!(r.entry.actor.as_deref(), Some("reconcile"), "{r:#?}");
                r.entry.call.body.clone().unwrap_or_default().to_string()
            })
            .collect::<Vec<_>>()
    };
    let aws_subject = format!("orphan:aws:{ghost}");
    let gcp_subject = format!("orphan:gcp:{member}");

    // Report (the default): each orphan's plan is ledgered, nothing is changed.
    let (first, _) = reconcile_as_configured(&app, "").await;
    assert_eq!(first.writes, 0, "{first:#?}");
    assert_eq!(
        groups_of(&c, &ghost).await,
        [w.eng.clone(), w.hand.clone()].into()
    );
    assert_eq!(key_status(c.clone(), ghost.clone()).await, ["Active"]);
    assert!(
        gcp.members(&w.project, "roles/editor")
            .contains(&member.to_string())
    );
    let ledger = app.ledger().await;
    let aws = orphan_rows(&ledger, &aws_subject, "drift_reported");
    assert!(
        aws.len() == 1 && aws[0].contains("RemoveUserFromGroup") && aws[0].contains(&w.eng),
        "{aws:#?}"
    );
    assert_eq!(
        orphan_rows(&ledger, &gcp_subject, "drift_reported").len(),
        2,
        "{ledger:#?}"
    );
    assert!(
        ledger.iter().all(|r| !r.entry.subject.contains(&stray)),
        "{ledger:#?}"
    );

    // Disable, with a breaker that admits one offboarding: the IAM user is disabled, the GCP
    // member (found after it) is held and only reported.
    let breaker =
        "[reconcile]\norphans = \"disable\"\n[safety.breaker]\nwindow = \"1h\"\noffboardings = { max = 1 }\n";
    let (r, engine) = reconcile_as_configured(&app, breaker).await;
    assert_eq!(groups_of(&c, &ghost).await, [w.hand.clone()].into(), "{r:#?}");
    assert_eq!(key_status(c.clone(), ghost.clone()).await, ["Inactive"]);
    assert_eq!(key_status(c.clone(), stray.clone()).await, ["Active"]);
    let ledger = app.ledger().await;
    let written = orphan_rows(&ledger, &aws_subject, "200");
    assert!(
        written.iter().any(|b| b.contains("RemoveUserFromGroup"))
            && written
                .iter()
                .any(|b| b.contains("UpdateAccessKey") && b.contains(&key)),
        "{written:#?}"
    );
    assert!(
        gcp.members(&w.project, "roles/editor")
            .contains(&member.to_string())
    );
    let held = app.store.breaker_held(None).await.unwrap();
    assert_eq!(
        held.iter()
            .map(|h| (h.subject.as_str(), h.source.as_str()))
            .collect::<Vec<_>>(),
        [(gcp_subject.as_str(), "reconcile")]
    );
    assert!(
        ledger
            .iter()
            .any(|r| r.entry.subject == gcp_subject && r.entry.status == "held"),
        "{ledger:#?}"
    );
    assert_eq!(orphan_rows(&ledger, &gcp_subject, "drift_reported").len(), 4);

    // A person releases: the trip closes, and the next reconcile disables the member.
    gatehouse_engine::operator::release(&engine, None, "tester")
        .await
        .unwrap();
    assert!(app.store.breaker_held(None).await.unwrap().is_empty());
    let (r, _) = reconcile_as_configured(&app, breaker).await;
    assert!(r.writes >= 1, "{r:#?}");
    assert_eq!(gcp.members(&w.project, "roles/editor"), Vec::<String>::new());
    assert_eq!(
        gcp.members(&w.project, "roles/viewer"),
        vec!["group:all@example.com"]
    );
    unmanaged_intact(&gcp, &w);

    // Issue 15, `report access --as-of`: on the first reconcile's snapshot both orphans hold
    // managed grants; at a later time the ledger rows the AWS and GCP targets wrote since
    // (RemoveUserFromGroup, setIamPolicy removals) are replayed onto that same snapshot, and
    // neither holds anything any more.
    let snapshot = gatehouse_domain::access::AccessSnapshot {
        run_at: first.read_at,
        rows: first.observed.clone(),
    };
    let ledger = app.ledger().await;
    let policy = gatehouse_domain::policy::Policy::from_toml(&w.policy()).unwrap();
    let shape = gatehouse_engine::reconcile::CloudShape {
        aws: None,
        gcp: false,
    };
    let review =
        |as_of| gatehouse_engine::access::build(&policy, &[], Some(&snapshot), &ledger, &shape, as_of);
    let grants = |r: &gatehouse_engine::access::AccessReport, account: &str| {
        r.orphans
            .iter()
            .find(|o| o.account == account)
            .unwrap_or_else(|| panic!("{account} is not listed: {:#?}", r.orphans))
            .grants
            .clone()
    };
    let then = review(first.read_at);
    assert_eq!(grants(&then, &ghost), [format!("iam_group:{}", w.eng)]);
    assert!(!grants(&then, member).is_empty(), "{:#?}", then.orphans);
    let now = review(gatehouse_domain::clock::now());
    assert!(now.ledger.replayed >= 3, "{:#?}", now.ledger);
    assert_eq!(grants(&now, &ghost), Vec::<String>::new(), "{:#?}", now.orphans);
    assert_eq!(grants(&now, member), Vec::<String>::new(), "{:#?}", now.orphans);
    app.stop().await;
}

/// `gatehouse reconcile --apply` as the CLI runs it: the orphan mode from the config, the engine
/// (with its breaker) returned for what follows.
async fn reconcile_as_configured(app: &TestApp, extra: &str) -> (Report, gatehouse_app::AppEngine) {
    let text = std::fs::read_to_string(app.dir.path().join("gatehouse.toml")).unwrap();
    let path = app.dir.path().join("reconcile.toml");
    std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
    let cfg = Config::load(Some(&path), |_| None).unwrap();
    let state = gatehouse_store::state::AnyState::Sqlite(app.store.clone());
    let engine = gatehouse_app::engine_with_cloud(&cfg, state).await.unwrap();
    let r = reconcile::run_full(
        &engine,
        &app.store,
        true,
        &reconcile::ReadOptions::default(),
        cfg.reconcile.orphan_mode().unwrap(),
        &LogProgress,
    )
    .await
    .unwrap();
    (r, engine)
}
