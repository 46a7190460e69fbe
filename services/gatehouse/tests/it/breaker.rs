//! Issue 19 items 3 and 4 as an operator meets them: the mass-change breaker holds a burst of
//! offboardings past its limit (across a restart) until `gatehouse safety release|discard`, and
//! `gatehouse offboard` closes a person now, for good against stale IdP events.

use crate::{bin, text};
use chrono::{Duration as Span, Utc};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::ports::{LedgerRow, QueueProducer, StateStore};
use gatehouse_engine::engine::Handled;
use gatehouse_engine::worker::{Disposition, Worker, WorkerConfig};
use gatehouse_platform::config::Config;
use gatehouse_store::sqlite::Sqlite;
use gatehouse_store::state::AnyState;
use gatehouse_testkit::FakeLooker;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const BREAKER: &str = "[safety.breaker]\nwindow = \"1h\"\n[safety.breaker.offboardings]\nmax = 20\n";

fn email(i: usize) -> String {
    format!("person{i}@example.com")
}

fn okta(i: usize, id: &str, event: IdentityEvent, at: chrono::DateTime<Utc>) -> Envelope {
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("okta:default:{id}")),
        source: Source::Okta,
        subject: Subject {
            key: format!("okta:00u{i}"),
            email: Some(email(i)),
            display_name: None,
        },
        occurred_at: at,
        received_at: at,
        event,
        profile: Default::default(),
        source_event_type: "user.lifecycle".into(),
        raw: serde_json::Value::Null,
    }
}

/// The variables a processor and the CLI both get.
fn vars(data: &Path, fake: &FakeLooker) -> Vec<(String, String)> {
    vec![
        ("GATEHOUSE_DATA_DIR".into(), data.display().to_string()),
        ("GATEHOUSE_LOOKER_URL".into(), fake.base_url()),
        ("GATEHOUSE_LOOKER_CLIENT_ID".into(), fake.client_id().into()),
        (
            "GATEHOUSE_LOOKER_CLIENT_SECRET".into(),
            fake.client_secret().into(),
        ),
    ]
}

fn config(file: &Path, vars: &[(String, String)]) -> Config {
    Config::load(Some(file), |k| {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap()
}

/// A processor in this test: the configured engine over the SQLite queue, driven until the
/// queue is empty. Returns every delivery's fate.
async fn process_all(cfg: &Config, db: &Sqlite) -> Vec<Disposition> {
    let engine = Arc::new(gatehouse_app::engine(cfg, AnyState::Sqlite(db.clone())).unwrap());
    let worker = Worker::new(
        db.clone(),
        engine,
        WorkerConfig {
            concurrency: 8,
            max_attempts: 5,
            visibility_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(10),
            sweep_interval: Duration::from_secs(3600),
        },
    );
    let mut all = Vec::new();
    loop {
        let batch = worker.run_once().await.unwrap();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// Run `gatehouse ARGS` with the test's variables.
fn run(cfg_file: &Path, vars: &[(String, String)], args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = bin();
    c.arg("--config").arg(cfg_file).args(args);
    for (k, v) in vars {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let (out, err) = text(&o);
    (o.status.code(), out, err)
}

fn disables(fake: &FakeLooker, user: &str) -> usize {
    let path = format!("/users/{user}");
    fake.calls()
        .iter()
        .filter(|c| c.method == "PATCH" && c.path == path && c.body.contains("\"is_disabled\":true"))
        .count()
}

async fn ledger(data: &Path) -> Vec<LedgerRow> {
    let db = Sqlite::open(data).await.unwrap();
    let rows = db.ledger_since(None).await.unwrap();
    db.close().await;
    rows
}

fn status(cfg_file: &Path, vars: &[(String, String)]) -> serde_json::Value {
    let (code, out, err) = run(cfg_file, vars, &["safety", "status", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_offboardings_past_a_limit_of_twenty_are_held_across_a_restart_until_released_once_each() {
    let fake = FakeLooker::start().await;
    let users: Vec<String> = (0..50)
        .map(|i| {
            let u = fake.add_user(&email(i), "P", &i.to_string());
            fake.add_session(&u);
            u
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg_file = dir.path().join("gatehouse.toml");
    std::fs::write(&cfg_file, BREAKER).unwrap();
    let vars = vars(&data, &fake);
    let cfg = config(&cfg_file, &vars);
    let now = gatehouse_domain::clock::now();
    // A minute of deactivations (a catch-up burst counts when handled, whatever its dates).
    let burst: Vec<Envelope> = (0..50)
        .map(|i| {
            okta(
                i,
                &format!("off-{i}"),
                IdentityEvent::UserDeactivated,
                now - Span::seconds(60) + Span::seconds(i as i64),
            )
        })
        .collect();
    {
        let db = Sqlite::open(&data).await.unwrap();
        db.publish(&burst).await.unwrap();
        let fates = process_all(&cfg, &db).await;
        assert_eq!(fates.len(), 50);
        let held = fates
            .iter()
            .filter(|f| **f == Disposition::Acked(Handled::Held))
            .count();
        let applied = fates
            .iter()
            .filter(|f| matches!(f, Disposition::Acked(Handled::Applied { .. })))
            .count();
        assert_eq!((applied, held), (20, 30), "{fates:?}");
        assert!(
            db.dead_letters().await.unwrap().is_empty(),
            "nothing dead-lettered"
        );
        db.close().await;
    }
    let disabled = || users.iter().filter(|u| fake.user(u).unwrap().is_disabled).count();
    assert_eq!(disabled(), 20, "none applied beyond the limit");

    // A restart: the trip and the held changes are still there; nothing comes back on the queue.
    let s = status(&cfg_file, &vars);
    assert_eq!(s["held"].as_array().unwrap().len(), 30, "{s}");
    let trips = s["trips"].as_array().unwrap();
    assert_eq!(trips.len(), 1, "{s}");
    assert_eq!(trips[0]["kind"], "offboarding");
    assert_eq!(trips[0]["scope"], "*");
    assert_eq!(
        (trips[0]["count"].as_u64(), trips[0]["limit"].as_u64()),
        (Some(21), Some(20))
    );
    {
        let db = Sqlite::open(&data).await.unwrap();
        assert!(process_all(&cfg, &db).await.is_empty());
        // A later offboarding is held too while the breaker is open.
        fake.add_user(&email(50), "P", "50");
        db.publish(&[okta(50, "off-50", IdentityEvent::UserDeactivated, now)])
            .await
            .unwrap();
        assert_eq!(
            process_all(&cfg, &db).await,
            vec![Disposition::Acked(Handled::Held)]
        );
        db.close().await;
    }
    assert_eq!(disabled(), 20);
    let held_rows = ledger(&data).await;
    assert_eq!(
        held_rows
            .iter()
            .filter(|r| r.entry.status == "held" && r.entry.rule == "safety.breaker.offboarding")
            .count(),
        31
    );

    let held_order: Vec<String> = status(&cfg_file, &vars)["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["envelope_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(held_order.len(), 31);
    // A person releases: every held change applied in order, exactly once.
    let (code, out, err) = run(&cfg_file, &vars, &["safety", "release", "--actor", "ops-anna"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("31 held change(s) applied"), "{out}");
    assert_eq!(disabled(), 50);
    assert!(fake.user_by_email(&email(50)).unwrap().is_disabled);
    for u in &users {
        assert_eq!(disables(&fake, u), 1, "user {u} disabled once");
    }
    let rows = ledger(&data).await;
    let released: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.status == "released by ops-anna")
        .collect();
    assert_eq!(released.len(), 31);
    let decision = rows
        .iter()
        .find(|r| r.entry.event == "safety_release")
        .expect("the release decision is ledgered");
    assert_eq!(decision.entry.call.body.as_ref().unwrap()["actor"], "ops-anna");
    // Release order is hold order: the held changes' writes follow their hold sequence.
    let first_write = |id: &str| {
        rows.iter()
            .position(|r| r.entry.envelope_id == id && r.entry.target == "looker")
    };
    let order: Vec<_> = held_order.iter().map(|id| first_write(id).unwrap()).collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "released in the order held"
    );

    // Releasing again finds nothing; nothing is applied twice.
    let (code, out, _) = run(&cfg_file, &vars, &["safety", "release", "--actor", "ops-anna"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("0 held change(s) applied"), "{out}");
    for u in &users {
        assert_eq!(disables(&fake, u), 1);
    }
    let s = status(&cfg_file, &vars);
    assert!(s["held"].as_array().unwrap().is_empty() && s["trips"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_changes_are_never_applied_even_when_delivered_again() {
    let fake = FakeLooker::start().await;
    let users: Vec<String> = (0..5)
        .map(|i| fake.add_user(&email(i), "P", &i.to_string()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg_file = dir.path().join("gatehouse.toml");
    std::fs::write(
        &cfg_file,
        "[safety.breaker]\n[safety.breaker.offboardings]\nmax_per_source = 2\n",
    )
    .unwrap();
    let vars = vars(&data, &fake);
    let cfg = config(&cfg_file, &vars);
    let burst: Vec<Envelope> = (0..5)
        .map(|i| {
            okta(
                i,
                &format!("d-{i}"),
                IdentityEvent::UserDeactivated,
                gatehouse_domain::clock::now(),
            )
        })
        .collect();
    let db = Sqlite::open(&data).await.unwrap();
    db.publish(&burst).await.unwrap();
    process_all(&cfg, &db).await;
    let disabled = || users.iter().filter(|u| fake.user(u).unwrap().is_disabled).count();
    assert_eq!(disabled(), 2);
    let s = status(&cfg_file, &vars);
    assert_eq!(s["trips"][0]["scope"], "okta", "a per-source trip: {s}");

    // Discarding another source's changes leaves these held.
    let (code, out, err) = run(
        &cfg_file,
        &vars,
        &["safety", "discard", "--source", "scim", "--actor", "ops"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("0 held change(s) dropped"), "{out}");
    let (code, out, err) = run(
        &cfg_file,
        &vars,
        &["safety", "discard", "--source", "okta", "--actor", "ops"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("3 held change(s) dropped"), "{out}");
    let rows = ledger(&data).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.entry.status == "discarded by ops")
            .count(),
        3
    );
    let s = status(&cfg_file, &vars);
    assert!(s["held"].as_array().unwrap().is_empty() && s["trips"].as_array().unwrap().is_empty());

    // The queue delivers the same events again: the discarded ones stay unapplied.
    let writes = fake.write_calls();
    db.publish(&burst).await.unwrap();
    let fates = process_all(&cfg, &db).await;
    assert_eq!(
        fates
            .iter()
            .filter(|f| **f == Disposition::Acked(Handled::Held))
            .count(),
        3
    );
    assert_eq!(
        fates
            .iter()
            .filter(|f| **f == Disposition::Acked(Handled::Duplicate))
            .count(),
        2
    );
    assert_eq!(disabled(), 2);
    assert_eq!(fake.write_calls(), writes);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboard_closes_a_person_now_and_a_stale_activate_does_not_reopen_them() {
    let fake = FakeLooker::start().await;
    let uid = fake.add_user(&email(1), "Alice", "A");
    let other = fake.add_user(&email(2), "Bob", "B");
    let other_session = fake.add_session(&other);
    for _ in 0..2 {
        fake.add_session(&uid);
        fake.add_api3_key(&uid);
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg_file = dir.path().join("gatehouse.toml");
    // A policy that would only disable: the emergency offboarding still revokes everything.
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[offboarding]\nrevoke_sessions = false\nrevoke_api_keys = false\n",
    )
    .unwrap();
    std::fs::write(
        &cfg_file,
        format!("policy = {:?}\n{BREAKER}", policy.display().to_string()),
    )
    .unwrap();
    let vars = vars(&data, &fake);
    let cfg = config(&cfg_file, &vars);
    let t0 = gatehouse_domain::clock::now() - Span::minutes(10);
    // The IdP knows Alice as active.
    let db = Sqlite::open(&data).await.unwrap();
    db.publish(&[okta(1, "act-1", IdentityEvent::UserActivated, t0)])
        .await
        .unwrap();
    process_all(&cfg, &db).await;
    assert!(!fake.user(&uid).unwrap().is_disabled);

    let (code, out, err) = run(
        &cfg_file,
        &vars,
        &[
            "offboard",
            &email(1).to_uppercase(),
            "--reason",
            "stolen laptop",
            "--actor",
            "sec-oncall",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled);
    assert!(u.session_ids.is_empty(), "sessions left: {:?}", u.session_ids);
    assert!(u.api3_key_ids.is_empty(), "keys left: {:?}", u.api3_key_ids);
    assert_eq!(fake.user(&other).unwrap().session_ids, vec![other_session]);
    let rows = db.ledger_since(None).await.unwrap();
    let decision = rows
        .iter()
        .find(|r| r.entry.rule == "safety.offboard")
        .expect("the offboarding is ledgered");
    let body = decision.entry.call.body.as_ref().unwrap();
    assert_eq!(
        (&body["actor"], &body["reason"]),
        (&"sec-oncall".into(), &"stolen laptop".into())
    );
    assert_eq!(
        decision.entry.subject, "okta:00u1",
        "the person the directory knows"
    );
    // Every write went out under the offboarding's own envelope.
    assert!(
        rows.iter()
            .filter(|r| r.entry.target == "looker")
            .all(|r| r.entry.envelope_id == decision.entry.envelope_id)
    );
    // Issue 15: the decision and every call name the operator and the policy's digest (the
    // SHA-256 of the policy file's bytes).
    let digest = gatehouse_domain::policy::PolicyDigest::of(&std::fs::read(&policy).unwrap()).0;
    let mine: Vec<_> = rows
        .iter()
        .filter(|r| r.entry.envelope_id == decision.entry.envelope_id)
        .collect();
    assert!(mine.len() >= 4, "decision, disable, session, key: {mine:?}");
    for r in mine {
        assert_eq!(r.entry.actor.as_deref(), Some("operator:sec-oncall"), "{r:?}");
        assert_eq!(r.entry.policy_digest.as_deref(), Some(digest.as_str()), "{r:?}");
    }

    // An IdP "activate" dated before the offboarding (a delayed delivery) does not re-enable.
    let writes = fake.write_calls();
    db.publish(&[okta(
        1,
        "act-late",
        IdentityEvent::UserActivated,
        t0 + Span::minutes(5),
    )])
    .await
    .unwrap();
    let fates = process_all(&cfg, &db).await;
    assert_eq!(fates.len(), 1);
    assert!(fake.user(&uid).unwrap().is_disabled, "{fates:?}");
    assert_eq!(fake.write_calls(), writes);
    db.close().await;

    // Refused input names the field.
    let (code, _, err) = run(&cfg_file, &vars, &["offboard", "not-an-email", "--actor", "x"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("EMAIL"), "{err}");
}
