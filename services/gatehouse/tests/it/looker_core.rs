//! Looker (Google Cloud core), issue 14 item 5, against the fake Looker and the fake GCP IAM:
//! onboarding grants `roles/looker.instanceUser` and never creates a Looker user; the account
//! appears at the first login and the first-login run converges it (one Looker call when
//! nothing is new); offboarding removes the binding and still closes the Looker user; a core
//! configuration without its project or the GCP target does not start.

use super::{bin, text};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Source, Subject};
use gatehouse_domain::ports::StateStore;
use gatehouse_engine::engine::Handled;
use gatehouse_engine::looker_core::FirstLogins;
use gatehouse_store::state::AnyState;
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::gcp_iam_fake::FakeGcpIam;
use serde_json::json;

const PROJECT: &str = "projects/looker-prod";
const ROLE: &str = "roles/looker.instanceUser";
const ANA: &str = "ana@example.com";
const ANA_KEY: &str = "00uana";

struct World {
    looker: FakeLooker,
    gcp: FakeGcpIam,
    _dir: tempfile::TempDir,
    state: AnyState,
    engine: gatehouse_app::AppEngine,
    /// Looker ids: the Analysts group, the Explorer role, the region attribute.
    group: String,
    role: String,
    region: String,
    events: std::cell::Cell<u32>,
}

impl World {
    /// A processor for a core instance (`platform`: `core` or `original`) whose policy gives
    /// Analysts a group, a role and an attribute value.
    async fn start(platform: &str) -> World {
        let looker = FakeLooker::start().await;
        let gcp = FakeGcpIam::start().await;
        gcp.add_resource(
            PROJECT,
            json!([{ "role": "roles/owner", "members": ["user:owner@example.com"] }]),
        );
        let group = looker.add_group("Analysts");
        let role = looker.add_role("Explorer");
        let region = looker.add_user_attribute("region");
        let dir = tempfile::tempdir().unwrap();
        let policy = dir.path().join("policy.toml");
        std::fs::write(
            &policy,
            "[[rule]]\nname = \"analysts\"\nwhen = { idp_group = \"Analysts\" }\n\
             looker_groups = [\"Analysts\"]\nlooker_roles = [\"Explorer\"]\n\
             looker_attributes = { region = \"emea\" }\n\
             [attributes.region]\ndeny_value = \"__none__\"\n",
        )
        .unwrap();
        let core = match platform {
            "core" => format!("platform = \"core\"\n[looker.core]\nproject = {PROJECT:?}\n"),
            _ => String::new(),
        };
        let cfg = dir.path().join("gatehouse.toml");
        std::fs::write(
            &cfg,
            format!(
                "data_dir = {:?}\npolicy = {:?}\n[identity]\nallowed_email_domains = [\"example.com\"]\n\
                 [looker]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n{core}{}",
                dir.path().join("data"),
                policy,
                looker.base_url(),
                looker.client_id(),
                looker.client_secret(),
                gcp.toml()
            ),
        )
        .unwrap();
        let cfg = gatehouse_platform::config::Config::load(Some(&cfg), |_| None).unwrap();
        let sqlite = gatehouse_store::sqlite::Sqlite::open(&cfg.data_dir)
            .await
            .unwrap();
        let state = gatehouse_app::open_state(&cfg, &sqlite).await.unwrap();
        let engine = gatehouse_app::engine_with_cloud(&cfg, state.clone())
            .await
            .unwrap();
        World {
            looker,
            gcp,
            _dir: dir,
            state,
            engine,
            group,
            role,
            region,
            events: std::cell::Cell::new(0),
        }
    }

    async fn handle(&self, event: IdentityEvent) -> Handled {
        let n = self.events.get() + 1;
        self.events.set(n);
        let at = gatehouse_domain::clock::now() + chrono::Duration::milliseconds(i64::from(n));
        let profile = [
            ("email".to_string(), ANA.to_string()),
            ("firstName".to_string(), "Ana".to_string()),
            ("lastName".to_string(), "Lima".to_string()),
        ]
        .into();
        let env = Envelope {
            version: Envelope::VERSION,
            id: EnvelopeId(format!("manual:core-{n}")),
            source: Source::Manual,
            subject: Subject {
                key: ANA_KEY.into(),
                email: Some(ANA.into()),
                display_name: None,
            },
            occurred_at: at,
            received_at: at,
            event,
            profile,
            source_event_type: "test".into(),
            raw: serde_json::Value::Null,
            trace_parent: None,
        };
        self.engine.handle(&env).await.unwrap()
    }

    /// Ana joins: activated, then made an Analyst.
    async fn onboard(&self) {
        self.handle(IdentityEvent::UserActivated).await;
        self.handle(IdentityEvent::GroupMemberAdded {
            group: GroupRef {
                id: "g-analysts".into(),
                name: "Analysts".into(),
            },
        })
        .await;
    }

    fn login_members(&self) -> Vec<String> {
        self.gcp.members(PROJECT, ROLE)
    }

    /// Calls that core forbids: creating a user, writing email credentials.
    fn forbidden_calls(&self) -> Vec<String> {
        self.looker
            .calls()
            .into_iter()
            .filter(|c| (c.method == "POST" && c.path == "/users") || c.path.contains("credentials_email"))
            .map(|c| format!("{} {}", c.method, c.path))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_onboarding_grants_the_login_binding_and_creates_no_looker_user() {
    let w = World::start("core").await;
    w.onboard().await;

    assert_eq!(w.forbidden_calls(), Vec::<String>::new());
    assert!(
        w.looker.user_by_email(ANA).is_none(),
        "no user exists before the first login"
    );
    assert_eq!(
        w.looker.write_calls(),
        0,
        "nothing is written in Looker while pending"
    );
    assert_eq!(w.login_members(), vec![format!("user:{ANA}")]);
    // Other bindings of the project are kept.
    assert_eq!(
        w.gcp.members(PROJECT, "roles/owner"),
        vec!["user:owner@example.com"]
    );
    let rows = w.state.ledger_since(None).await.unwrap();
    let grant: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.target == "gcp" && r.entry.rule == "looker.core.instance_user")
        .collect();
    assert_eq!(grant.len(), 1, "one ledgered grant: {rows:#?}");
    assert_eq!(grant[0].entry.subject, ANA_KEY);
    // Pending first login: not recorded as converged, so the next look reads Looker again.
    let subject = w.state.load_subject(ANA_KEY).await.unwrap().unwrap();
    assert_eq!(subject.converged, None);
    // Another event while pending: no error, still no Looker write.
    let again = w.handle(IdentityEvent::ProfileUpdated).await;
    assert!(matches!(again, Handled::Applied { writes: 0 }), "{again:?}");
    assert_eq!(w.looker.write_calls(), 0);
    assert_eq!(w.login_members(), vec![format!("user:{ANA}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_login_run_converges_the_new_user_and_costs_one_call_when_nothing_is_new() {
    let w = World::start("core").await;
    w.onboard().await;
    let mut run = FirstLogins::new(2);
    // A process's first run reads one page (only the admin exists: nobody of the directory).
    let first = run.run(&w.engine, &w.state).await.unwrap();
    assert_eq!(
        (first.pages, first.converged.len(), first.unmatched),
        (1, 0, 1),
        "{first:?}"
    );

    w.looker.reset_calls();
    let idle = run.run(&w.engine, &w.state).await.unwrap();
    let calls = w.looker.calls();
    assert_eq!(calls.len(), 1, "nothing new: one call: {calls:#?}");
    assert_eq!(
        (calls[0].method.as_str(), calls[0].path.as_str()),
        ("GET", "/users/search")
    );
    for (k, v) in [
        ("is_service_account", "false"),
        ("sorts", "id desc"),
        ("fields", "id,email"),
        ("limit", "2"),
        ("offset", "0"),
    ] {
        assert_eq!(
            calls[0].query_param(k).as_deref(),
            Some(v),
            "{k}: {}",
            calls[0].query
        );
    }
    assert_eq!((idle.new_users, idle.writes), (0, 0));

    // Ana signs in for the first time: Looker (core) creates her user, in nothing yet.
    let uid = w.looker.first_login(ANA, "Ana", "Lima");
    // Two more people's users arrive too (not in the directory): more than one page is new.
    w.looker.first_login("guest1@example.com", "G", "One");
    w.looker.first_login("guest2@example.com", "G", "Two");
    let converged = run.run(&w.engine, &w.state).await.unwrap();
    assert_eq!(converged.converged, vec![ANA_KEY.to_string()], "{converged:?}");
    assert_eq!(
        (converged.new_users, converged.unmatched, converged.pages),
        (3, 2, 2)
    );
    let ana = w.looker.user(&uid).unwrap();
    assert!(ana.group_ids.contains(&w.group), "{ana:?}");
    assert!(ana.direct_role_ids.contains(&w.role), "{ana:?}");
    assert_eq!(
        ana.attribute_values.get(&w.region).map(String::as_str),
        Some("emea")
    );
    assert_eq!(w.forbidden_calls(), Vec::<String>::new());
    let rows = w.state.ledger_since(None).await.unwrap();
    assert!(
        rows.iter().any(
            |r| r.entry.envelope_id == format!("looker-core:first-login:{uid}")
                && r.entry.actor.as_deref() == Some("scheduler")
                && r.entry.rule == "analysts"
        ),
        "{rows:#?}"
    );

    // Nothing new again: one call, and nothing converged twice.
    w.looker.reset_calls();
    let idle = run.run(&w.engine, &w.state).await.unwrap();
    assert_eq!(w.looker.calls().len(), 1, "{:#?}", w.looker.calls());
    assert!(idle.converged.is_empty());
    // A fresh process (no id seen yet) reads one page and skips Ana, who is linked now.
    let mut fresh = FirstLogins::new(100);
    let restart = fresh.run(&w.engine, &w.state).await.unwrap();
    assert!(restart.converged.is_empty(), "{restart:?}");
    assert_eq!(w.looker.write_calls(), 0, "no write after the convergence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_offboarding_removes_the_binding_and_closes_the_looker_user() {
    let w = World::start("core").await;
    w.onboard().await;
    let uid = w.looker.first_login(ANA, "Ana", "Lima");
    let mut run = FirstLogins::new(100);
    run.run(&w.engine, &w.state).await.unwrap();
    w.looker.add_session(&uid);
    w.looker.add_api3_key(&uid);
    assert_eq!(w.login_members(), vec![format!("user:{ANA}")]);

    w.handle(IdentityEvent::UserDeactivated).await;

    assert_eq!(
        w.login_members(),
        Vec::<String>::new(),
        "the login binding is removed"
    );
    let ana = w.looker.user(&uid).unwrap();
    assert!(
        ana.is_disabled,
        "removing the binding leaves the account active: disabled too"
    );
    assert!(
        ana.session_ids.is_empty() && ana.api3_key_ids.is_empty(),
        "{ana:?}"
    );
    assert!(!ana.group_ids.contains(&w.group), "{ana:?}");
    assert_eq!(
        w.gcp.members(PROJECT, "roles/owner"),
        vec!["user:owner@example.com"]
    );
    let rows = w.state.ledger_since(None).await.unwrap();
    assert!(
        rows.iter().any(|r| r.entry.target == "gcp"
            && r.entry.rule == "gcp.offboarding.remove_bindings"
            && r.entry
                .call
                .body
                .as_ref()
                .is_some_and(|b| b["remove"]["role"] == ROLE)),
        "{rows:#?}"
    );
    assert_eq!(w.forbidden_calls(), Vec::<String>::new());
}

/// Original mode is unchanged: the user is created (with its email credentials) and no login
/// binding is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_mode_still_creates_the_user_and_writes_no_login_binding() {
    let w = World::start("original").await;
    w.onboard().await;
    let ana = w.looker.user_by_email(ANA).expect("created");
    assert!(ana.group_ids.contains(&w.group));
    assert_eq!(w.login_members(), Vec::<String>::new());
    assert!(
        w.looker
            .calls()
            .iter()
            .any(|c| c.method == "POST" && c.path == "/users")
    );
}

#[test]
fn a_core_config_without_its_project_or_gcp_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut c = bin();
        c.arg("standalone")
            .env("GATEHOUSE_DATA_DIR", dir.path().join("data"))
            .env("GATEHOUSE_LISTEN", "127.0.0.1:0");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let o = run(&[("GATEHOUSE_LOOKER_PLATFORM", "core")]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o).1);
    assert!(text(&o).1.contains("looker.core.project"), "{}", text(&o).1);
    let o = run(&[
        ("GATEHOUSE_LOOKER_PLATFORM", "core"),
        ("GATEHOUSE_LOOKER_CORE_PROJECT", "projects/looker-prod"),
    ]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o).1);
    let err = text(&o).1;
    assert!(
        err.contains("looker.platform") && err.contains("[gcp] enabled = true"),
        "{err}"
    );
}

/// Two replicas on one state store: each interval is claimed as a tick, so one of them runs the
/// first-login search and the other skips it (one search call, not two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_run_one_first_login_search_per_interval() {
    use gatehouse_engine::looker_core::{Every, run_every};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let w = World::start("core").await;
    let (trigger, shutdown) = gatehouse_platform::shutdown::Shutdown::new();
    let at = gatehouse_domain::clock::now();
    // Each replica's clock counts its reads: the second read comes after its claim (and run).
    let clocks = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let replica = |i: usize| {
        let clock = clocks[i].clone();
        let (engine, state, shutdown) = (&w.engine, &w.state, shutdown.clone());
        async move {
            let every = Every {
                interval: std::time::Duration::from_secs(3600),
                page_size: 100,
                quota: None,
                reserve: None,
            };
            let now = move || {
                clock.fetch_add(1, Ordering::SeqCst);
                at
            };
            run_every(
                engine,
                state,
                state,
                &format!("replica-{i}"),
                every,
                now,
                shutdown,
            )
            .await
        }
    };
    let stop = async {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        while clocks.iter().any(|c| c.load(Ordering::SeqCst) < 2) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replicas did not both settle the tick"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        trigger.trigger();
    };
    tokio::join!(replica(0), replica(1), stop);
    let searches = w
        .looker
        .calls()
        .iter()
        .filter(|c| c.path == "/users/search" && c.query_param("sorts").as_deref() == Some("id desc"))
        .count();
    assert_eq!(searches, 1, "one replica ran the tick: {:#?}", w.looker.calls());
}
