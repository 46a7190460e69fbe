//! Looker API3 keys stored in AWS Secrets Manager (moto): staging labels, idempotent put, grace,
//! crash safety at every step, rollback, secrecy, and two racing instances.

use crate::support::{self, AWS_TEST_SECRET, clock, config, moto_url, phase, run_to_done, unique};
use aws_sdk_secretsmanager::Client as Sm;
use gatehouse_rotation::stores::SecretStore;
use gatehouse_rotation::stores::aws_sm::AwsSecretsManager;
use gatehouse_rotation::{Clock, Phase, RotationStore, Started};
use gatehouse_targets::client::looker::{LookerClient, LookerConfig};
use gatehouse_testkit::FakeLooker;
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::time::Duration;

struct Setup {
    _dir: tempfile::TempDir,
    cfg: gatehouse_platform::config::Config,
    fake: FakeLooker,
    sm: Sm,
    sdk: aws_config::SdkConfig,
    uid: String,
    secret_id: String,
    old_key: String,
    old_secret: String,
}

async fn setup(extra: &str) -> Setup {
    let _ = moto_url();
    let fake = FakeLooker::start().await;
    let uid = fake.add_user("svc-etl@example.com", "Svc", "Etl");
    let old_key = fake.add_api3_key(&uid);
    let (client_id, old_secret) = fake.api3_credentials(&old_key).unwrap();
    let sdk = support::sdk().await;
    let sm = Sm::new(&sdk);
    let secret_id = unique("gatehouse/looker-etl");
    let doc = serde_json::json!({ "key_id": old_key, "client_id": client_id, "client_secret": old_secret });
    sm.create_secret()
        .name(&secret_id)
        .secret_string(doc.to_string())
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[looker]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n\n[rotator]\nlease = \"1m\"\nretry_min_delay = \"10m\"\n\n\
         [[rotator.secrets]]\nname = \"looker-etl\"\ngrace = \"1h\"\ndestroy_after = \"1d\"\nholders = [\"alice@example.com\"]\n\
         kind = {{ type = \"looker_api3\", user_id = {uid:?} }}\nstore = {{ type = \"aws_secrets_manager\", secret_id = {secret_id:?} }}\n{extra}",
        fake.base_url(),
        fake.client_id(),
        fake.client_secret(),
    );
    let cfg = config(dir.path(), &toml);
    Setup {
        _dir: dir,
        cfg,
        fake,
        sm,
        sdk,
        uid,
        secret_id,
        old_key,
        old_secret,
    }
}

/// Version id → staging labels.
async fn stages(sm: &Sm, id: &str) -> BTreeMap<String, Vec<String>> {
    sm.describe_secret()
        .secret_id(id)
        .send()
        .await
        .unwrap()
        .version_ids_to_stages()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

async fn current(sm: &Sm, id: &str) -> serde_json::Value {
    // moto answers a GetSecretValue without a stage from its own default version, not from
    // AWSCURRENT as AWS does: ask for the label explicitly.
    let v = sm
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    serde_json::from_str(v.secret_string().unwrap()).unwrap()
}

/// The store's AWSCURRENT logs in to Looker as the service-account user.
async fn assert_current_works(s: &Setup) {
    let doc = current(&s.sm, &s.secret_id).await;
    let client = LookerClient::new(LookerConfig {
        base_url: s.fake.base_url(),
        client_id: doc["client_id"].as_str().unwrap().into(),
        client_secret: SecretString::from(doc["client_secret"].as_str().unwrap().to_string()),
        timeout: Duration::from_secs(5),
        catalog_ttl: Duration::ZERO,
        max_concurrent_calls: gatehouse_targets::client::looker::DEFAULT_MAX_CONCURRENT_CALLS,
    })
    .unwrap();
    assert_eq!(
        client.whoami().await.unwrap(),
        s.uid,
        "AWSCURRENT must always log in"
    );
}

fn key_ids(s: &Setup) -> Vec<String> {
    let mut k = s.fake.user(&s.uid).unwrap().api3_key_ids;
    k.sort();
    k
}

#[tokio::test]
async fn looker_key_rotates_through_aws_staging_labels() {
    let s = setup("").await;
    let clock = clock();
    let r = support::rotator(&s.cfg, &clock, Some(s.sdk.clone())).await;
    let Some(Started::New(id)) = r.start("looker-etl", "manual", false).await.unwrap() else {
        panic!("not started")
    };
    let old_version = stages(&s.sm, &s.secret_id).await.into_keys().next().unwrap();
    // snapshot, create, set
    for _ in 0..3 {
        r.step(&id).await.unwrap();
    }
    assert_eq!(phase(&r, &id).await, Phase::Set);
    let st = stages(&s.sm, &s.secret_id).await;
    assert_eq!(
        st[&id],
        vec!["AWSPENDING".to_string()],
        "the new version is {id}, pending: {st:?}"
    );
    assert_eq!(st[&old_version], vec!["AWSCURRENT".to_string()]);
    assert_current_works(&s).await;
    // ClientRequestToken = rotation id: a retried put writes the same version once.
    let store = AwsSecretsManager::new(&s.sdk, &s.secret_id);
    let pending =
        s.sm.get_secret_value()
            .secret_id(&s.secret_id)
            .version_stage("AWSPENDING")
            .send()
            .await
            .unwrap();
    let cred = gatehouse_rotation::Credential::new(
        "x",
        SecretString::from(pending.secret_string().unwrap().to_string()),
    );
    assert_eq!(store.put(&id, &cred).await.unwrap(), id);
    assert_eq!(stages(&s.sm, &s.secret_id).await.len(), 2);

    r.step(&id).await.unwrap(); // test
    assert_eq!(phase(&r, &id).await, Phase::Tested);
    assert_eq!(
        stages(&s.sm, &s.secret_id).await[&old_version],
        vec!["AWSCURRENT".to_string()]
    );
    r.step(&id).await.unwrap(); // finish
    let st = stages(&s.sm, &s.secret_id).await;
    assert_eq!(st[&id], vec!["AWSCURRENT".to_string()], "{st:?}");
    assert_eq!(st[&old_version], vec!["AWSPREVIOUS".to_string()], "{st:?}");
    assert_current_works(&s).await;
    let row = r.store().get(&id).await.unwrap().unwrap();
    let new_key = row.new_key_id.clone().unwrap();
    assert_eq!(current(&s.sm, &s.secret_id).await["key_id"], new_key.as_str());

    // Within the grace period the old key still works and is not deleted.
    clock.advance(Duration::from_secs(59 * 60));
    assert_eq!(r.drive(&id).await.unwrap(), 0);
    assert!(
        key_ids(&s).contains(&s.old_key),
        "old key deleted before the grace period"
    );
    clock.advance(Duration::from_secs(60));
    r.drive(&id).await.unwrap();
    assert_eq!(phase(&r, &id).await, Phase::Revoked);
    assert_eq!(
        key_ids(&s),
        vec![new_key.clone()],
        "the old key is deleted after the grace period"
    );
    clock.advance(Duration::from_secs(86_400));
    r.drive(&id).await.unwrap();
    assert_eq!(phase(&r, &id).await, Phase::Done);
    assert_current_works(&s).await;
    let ledger = r.store().ledger().await.unwrap();
    let steps: Vec<&str> = ledger
        .iter()
        .map(|e| e.call.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "snapshot", "created", "set", "tested", "finished", "revoked", "done"
        ]
    );
}

/// Stop after step k (drop the rotator: nothing survives but the database and the fakes),
/// restart, finish: exactly one new key, and AWSCURRENT logs in after every step.
#[tokio::test]
async fn a_crash_after_any_step_resumes_with_exactly_one_new_key() {
    for k in 1..=6 {
        let s = setup("").await;
        let clock = clock();
        let id = {
            let r = support::rotator(&s.cfg, &clock, Some(s.sdk.clone())).await;
            let Some(Started::New(id)) = r.start("looker-etl", "manual", false).await.unwrap() else {
                panic!()
            };
            for _ in 0..k {
                let row = r.store().get(&id).await.unwrap().unwrap();
                if row.due_at > clock.now() {
                    clock.advance((row.due_at - clock.now()).to_std().unwrap());
                }
                r.step(&id).await.unwrap();
                assert_current_works(&s).await;
            }
            id
        };
        // The crashed instance's lease runs out; a new instance takes over.
        clock.advance(Duration::from_secs(61));
        let r = support::rotator(&s.cfg, &clock, Some(s.sdk.clone())).await;
        run_to_done(&r, &id, &clock, || assert_current_works(&s)).await;
        let row = r.store().get(&id).await.unwrap().unwrap();
        assert_eq!(row.phase, Phase::Done, "k={k}");
        let keys = key_ids(&s);
        assert_eq!(keys.len(), 1, "k={k}: exactly one key must remain: {keys:?}");
        assert_ne!(keys[0], s.old_key, "k={k}");
        assert_eq!(
            current(&s.sm, &s.secret_id).await["key_id"],
            keys[0].as_str(),
            "k={k}"
        );
    }
}

#[tokio::test]
async fn a_failed_test_rolls_back_leaves_the_old_key_current_and_backs_off() {
    let handle = gatehouse_platform::telemetry::metrics_handle();
    let s = setup("").await;
    let clock = clock();
    let r = support::rotator(&s.cfg, &clock, Some(s.sdk.clone())).await;
    let Some(Started::New(id)) = r.start("looker-etl", "manual", false).await.unwrap() else {
        panic!()
    };
    for _ in 0..3 {
        r.step(&id).await.unwrap();
    }
    let before = stages(&s.sm, &s.secret_id).await;
    // The new key cannot log in (Looker refuses the service account's logins now).
    s.fake.set_disabled(&s.uid, true);
    r.drive(&id).await.unwrap();
    s.fake.set_disabled(&s.uid, false);
    let row = r.store().get(&id).await.unwrap().unwrap();
    assert_eq!(row.phase, Phase::RolledBack);
    assert!(
        row.error.as_deref().unwrap().contains("test failed"),
        "{:?}",
        row.error
    );
    let after = stages(&s.sm, &s.secret_id).await;
    assert!(
        after.values().all(|l| !l.contains(&"AWSPENDING".to_string())),
        "pending removed: {after:?}"
    );
    let old_version = before
        .iter()
        .find(|(_, l)| l.contains(&"AWSCURRENT".to_string()))
        .unwrap()
        .0;
    assert_eq!(
        after[old_version],
        vec!["AWSCURRENT".to_string()],
        "old stays current"
    );
    assert_eq!(key_ids(&s), vec![s.old_key.clone()], "the new key is deleted");
    assert_current_works(&s).await;
    let ledger = r.store().ledger().await.unwrap();
    assert!(
        ledger
            .iter()
            .any(|e| e.status == "rolled_back" && e.envelope_id == id)
    );
    assert!(ledger.iter().any(|e| e.status.starts_with("error: test failed")));
    let metrics = handle.render();
    assert!(
        metrics.lines().any(|l| l.starts_with("gatehouse_rotations_total")
            && l.contains("outcome=\"rolled_back\"")
            && l.contains("secret=\"looker-etl\"")),
        "{metrics}"
    );
    // The next attempt backs off: nothing before retry_min_delay, a retry after it.
    let state = r.store().secret_state("looker-etl").await.unwrap();
    assert_eq!(state.failures, 1);
    assert_eq!(state.retry_at, Some(clock.now() + chrono::Duration::minutes(10)));
    assert_eq!(r.start("looker-etl", "schedule", true).await.unwrap(), None);
    clock.advance(Duration::from_secs(9 * 60));
    assert!(r.tick().await.unwrap().started.is_empty());
    clock.advance(Duration::from_secs(60));
    let report = r.tick().await.unwrap();
    assert_eq!(
        report.started,
        vec![("looker-etl".to_string(), "retry".to_string())]
    );
    let history = r.store().history("looker-etl").await.unwrap();
    assert_eq!(
        history.last().unwrap().phase,
        Phase::Finished,
        "the retry succeeds"
    );
    assert_eq!(r.store().secret_state("looker-etl").await.unwrap().failures, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn secret_values_never_reach_logs_debug_errors_or_the_ledger() {
    let logs = gatehouse_testkit::logs::LogBuffer::default();
    let w = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests run in parallel without a subscriber: make sure no callsite keeps a cached
    // "never" from before this one existed.
    tracing::callsite::rebuild_interest_cache();
    let s = setup("").await;
    let clock = clock();
    let r = support::rotator(&s.cfg, &clock, Some(s.sdk.clone())).await;
    // One rotation that succeeds, one whose test fails.
    let Some(Started::New(id)) = r.start("looker-etl", "manual", false).await.unwrap() else {
        panic!()
    };
    run_to_done(&r, &id, &clock, || async {
        tracing::callsite::rebuild_interest_cache()
    })
    .await;
    let new_secret = current(&s.sm, &s.secret_id).await["client_secret"]
        .as_str()
        .unwrap()
        .to_string();
    let Some(Started::New(failing)) = r.start("looker-etl", "manual", false).await.unwrap() else {
        panic!()
    };
    for _ in 0..3 {
        r.step(&failing).await.unwrap();
    }
    let pending =
        s.sm.get_secret_value()
            .secret_id(&s.secret_id)
            .version_stage("AWSPENDING")
            .send()
            .await
            .unwrap();
    let pending_doc: serde_json::Value = serde_json::from_str(pending.secret_string().unwrap()).unwrap();
    let failing_secret = pending_doc["client_secret"].as_str().unwrap().to_string();
    s.fake.set_disabled(&s.uid, true);
    r.drive(&failing).await.unwrap();
    let mut seen = logs.text();
    assert!(seen.contains("rotation step done"), "logs were captured");
    for row in r.store().history("looker-etl").await.unwrap() {
        seen.push_str(&format!("{row:?}"));
    }
    for e in r.store().ledger().await.unwrap() {
        seen.push_str(&serde_json::to_string(&e).unwrap());
    }
    let cred = gatehouse_rotation::Credential::new("k", SecretString::from(new_secret.clone()));
    seen.push_str(&format!("{cred:?}"));
    let store = AwsSecretsManager::new(&s.sdk, "no-such-secret-anywhere");
    let parse = |v: SecretString| Ok(gatehouse_rotation::Credential::new("k", v));
    if let Err(e) = store.find("t", "k", &parse).await {
        seen.push_str(&format!("{e} {e:?}"));
    }
    for secret in [
        &s.old_secret,
        &new_secret,
        &failing_secret,
        &AWS_TEST_SECRET.to_string(),
        &s.fake.client_secret().to_string(),
    ] {
        assert!(!secret.is_empty());
        assert!(!seen.contains(secret.as_str()), "a secret value leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_the_database_rotate_a_secret_once() {
    let s = setup("").await;
    let clock = clock();
    let a = support::rotator(&s.cfg, &clock, Some(s.sdk.clone())).await;
    let b = support::rotator(&s.cfg, &clock, Some(s.sdk.clone())).await;
    s.fake.reset_calls();
    let (x, y) = tokio::join!(
        a.start("looker-etl", "manual", false),
        b.start("looker-etl", "manual", false)
    );
    let (x, y) = (x.unwrap().unwrap(), y.unwrap().unwrap());
    let ids: Vec<&String> = [&x, &y]
        .iter()
        .map(|s| match s {
            Started::New(id) | Started::AlreadyActive(id) | Started::Existed(id) => id,
        })
        .collect();
    assert_eq!(ids[0], ids[1], "both instances see one rotation");
    assert_eq!(
        [&x, &y].iter().filter(|s| matches!(s, Started::New(_))).count(),
        1
    );
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    ra.unwrap();
    rb.unwrap();
    // Whoever did not drive it finishes what is left.
    a.tick().await.unwrap();
    let history = a.store().history("looker-etl").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].phase, Phase::Finished);
    let creates = s
        .fake
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/credentials_api3"))
        .count();
    assert_eq!(creates, 1, "exactly one key created");
    assert_eq!(key_ids(&s).len(), 2, "old (in grace) and new");
    assert_current_works(&s).await;
}
