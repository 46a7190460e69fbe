//! GCP service-account keys (fake IAM) stored in GCP Secret Manager (fake): versions, grace,
//! destroy, crash safety, and the SECRET_ROTATE / out-of-band / unknown triggers.

use crate::support::{self, clock, config, run_to_done, unique};
use gatehouse_domain::ports::RotationRequest;
use gatehouse_platform::config::Config;
use gatehouse_rotation::{Clock, Phase, RotationStore, Started};
use gatehouse_testkit::gcp_sa_keys_fake::{FakeSaKeys, SaKeyInSecret};
use gatehouse_testkit::secret_manager_fake::FakeSecretManager;
use std::time::Duration;

const SA: &str = "svc-export@gatehouse-test.iam.gserviceaccount.com";
const SECRET: &str = "projects/gatehouse-test/secrets/svc-export-key";

struct Setup {
    _dir: tempfile::TempDir,
    cfg: Config,
    sm: FakeSecretManager,
    iam: FakeSaKeys,
    old_key: String,
}

async fn setup(on_out_of_band: &str) -> Setup {
    let SaKeyInSecret { sm, iam, old_key } = SaKeyInSecret::start(SA, SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[rotator]\nlease = \"1m\"\n[rotator.gcp]\nsecret_manager_url = {:?}\niam_url = {:?}\naccess_token = {:?}\n\n\
             [[rotator.secrets]]\nname = \"export\"\ngrace = \"1h\"\ndestroy_after = \"1d\"\non_out_of_band = {on_out_of_band:?}\n\
             kind = {{ type = \"gcp_service_account_key\", email = {SA:?} }}\n\
             store = {{ type = \"gcp_secret_manager\", name = {SECRET:?} }}\n",
            sm.url(),
            iam.url(),
            sm.token()
        ),
    );
    Setup {
        _dir: dir,
        cfg,
        sm,
        iam,
        old_key,
    }
}

/// `versions/latest` holds a key file that can authenticate.
fn assert_latest_works(s: &Setup) {
    let latest = s.sm.latest(SECRET).expect("latest must be readable");
    assert!(s.iam.can_authenticate(&latest), "latest must hold a working key");
}

fn states(s: &Setup) -> Vec<String> {
    s.sm.versions(SECRET).into_iter().map(|v| v.state).collect()
}

#[tokio::test]
async fn gcp_key_rotation_adds_a_version_then_disables_and_destroys_the_old() {
    let s = setup("alert").await;
    let clock = clock();
    let r = support::rotator(&s.cfg, &clock, None).await;
    let Some(Started::New(id)) = r.start("export", "manual", false).await.unwrap() else {
        panic!()
    };
    r.step(&id).await.unwrap(); // snapshot
    r.step(&id).await.unwrap(); // create
    r.step(&id).await.unwrap(); // test (before the version exists: latest is always tested)
    assert_eq!(support::phase(&r, &id).await, Phase::Tested);
    assert_eq!(s.sm.versions(SECRET).len(), 1, "nothing added before the test");
    r.step(&id).await.unwrap(); // set = add version
    assert_eq!(states(&s), ["ENABLED", "ENABLED"]);
    assert_latest_works(&s);
    r.drive(&id).await.unwrap(); // finish
    let row = r.store().get(&id).await.unwrap().unwrap();
    assert_eq!(
        (row.phase, row.old_version.as_deref(), row.new_version.as_deref()),
        (Phase::Finished, Some("1"), Some("2"))
    );
    let new_key = row.new_key_id.unwrap();
    assert_eq!(
        s.iam.keys(SA),
        vec![(s.old_key.clone(), true), (new_key.clone(), true)]
    );
    clock.advance(Duration::from_secs(3600));
    r.drive(&id).await.unwrap();
    assert_eq!(
        states(&s),
        ["DISABLED", "ENABLED"],
        "old version disabled after grace"
    );
    assert_eq!(
        s.iam.keys(SA),
        vec![(s.old_key.clone(), false), (new_key.clone(), true)]
    );
    clock.advance(Duration::from_secs(86_400));
    r.drive(&id).await.unwrap();
    assert_eq!(states(&s), ["DESTROYED", "ENABLED"], "destroyed later");
    assert_eq!(s.iam.keys(SA), vec![(new_key, true)]);
    assert_latest_works(&s);
}

#[tokio::test]
async fn gcp_crash_after_any_step_resumes_with_exactly_one_new_key() {
    for k in 1..=6 {
        let s = setup("alert").await;
        let clock = clock();
        let id = {
            let r = support::rotator(&s.cfg, &clock, None).await;
            let Some(Started::New(id)) = r.start("export", "manual", false).await.unwrap() else {
                panic!()
            };
            for _ in 0..k {
                let row = r.store().get(&id).await.unwrap().unwrap();
                if row.due_at > clock.now() {
                    clock.advance((row.due_at - clock.now()).to_std().unwrap());
                }
                r.step(&id).await.unwrap();
                assert_latest_works(&s);
            }
            id
        };
        clock.advance(Duration::from_secs(61));
        let r = support::rotator(&s.cfg, &clock, None).await;
        run_to_done(&r, &id, &clock, || async { assert_latest_works(&s) }).await;
        let keys = s.iam.keys(SA);
        assert_eq!(keys.len(), 1, "k={k}: {keys:?}");
        assert_ne!(keys[0].0, s.old_key, "k={k}");
        let enabled =
            s.sm.versions(SECRET)
                .into_iter()
                .filter(|v| v.state == "ENABLED")
                .count();
        assert_eq!(enabled, 1, "k={k}: one readable version");
    }
}

#[tokio::test]
async fn requests_secret_rotate_and_out_of_band_rotate_or_alert_and_unknown_is_counted() {
    let s = setup("alert").await;
    let clock = clock();
    let r = support::rotator(&s.cfg, &clock, None).await;
    let db = r.store().db().clone();
    let req = |id: &str, subject: &str, provider: &str, reason: &str, secret: Option<&str>| RotationRequest {
        envelope_id: id.into(),
        subject: subject.into(),
        provider: provider.into(),
        reason: reason.into(),
        secret: secret.map(str::to_string),
    };
    // Out of band, configured to alert: no rotation, a ledger row.
    support::publish_request(
        &db,
        &req(
            "gcp:1",
            &format!("gcp:sa:{SA}"),
            "gcp",
            "service account key created outside gatehouse",
            None,
        ),
    )
    .await
    .unwrap();
    // A subject no secret is declared for.
    support::publish_request(
        &db,
        &req(
            "gcp:2",
            "gcp:sa:other@x.iam.gserviceaccount.com",
            "gcp",
            "key",
            None,
        ),
    )
    .await
    .unwrap();
    let report = r.tick().await.unwrap();
    assert_eq!(report.alerted, vec!["export".to_string()]);
    assert_eq!(report.unmatched, 1);
    assert!(report.started.is_empty());
    assert!(r.store().history("export").await.unwrap().is_empty());
    assert!(
        r.store()
            .ledger()
            .await
            .unwrap()
            .iter()
            .any(|e| e.status == "alert" && e.envelope_id == "gcp:1")
    );
    assert!(r.store().pending_requests().await.unwrap().is_empty());
    // SECRET_ROTATE for the secret's name.
    support::publish_request(
        &db,
        &req("gcp:pubsub:3", SECRET, "gcp", "SECRET_ROTATE", Some(SECRET)),
    )
    .await
    .unwrap();
    let report = r.tick().await.unwrap();
    assert_eq!(
        report.started,
        vec![("export".to_string(), "secret_rotate".to_string())]
    );
    assert_eq!(
        r.store().history("export").await.unwrap()[0].phase,
        Phase::Finished
    );
    assert_latest_works(&s);

    // Same out-of-band event with `rotate`: a rotation.
    let s2 = setup("rotate").await;
    let r2 = support::rotator(&s2.cfg, &clock, None).await;
    support::publish_request(
        r2.store().db(),
        &req(
            &unique("gcp"),
            &format!("gcp:sa:{SA}"),
            "gcp",
            "key created",
            None,
        ),
    )
    .await
    .unwrap();
    let report = r2.tick().await.unwrap();
    assert_eq!(
        report.started,
        vec![("export".to_string(), "out_of_band".to_string())]
    );
    // An offboarded holder's request (what the engine records).
    support::publish_request(
        r2.store().db(),
        &req(
            "offboarding:evt-1:export",
            "okta:00u1",
            "offboarding",
            "holder offboarded",
            Some("export"),
        ),
    )
    .await
    .unwrap();
    let report = r2.tick().await.unwrap();
    assert_eq!(
        report.started,
        vec![("export".to_string(), "holder_offboarded".to_string())]
    );
}

#[tokio::test]
async fn dry_run_plan_reads_only() {
    let s = setup("alert").await;
    let clock = clock();
    let r = support::rotator(&s.cfg, &clock, None).await;
    let before_sm = s.sm.write_calls();
    let plan = r.plan("export").await.unwrap().join("\n");
    assert!(plan.contains(&format!("key {}", s.old_key)), "{plan}");
    assert!(plan.contains("after 1h: disable key"), "{plan}");
    assert_eq!(s.sm.write_calls(), before_sm);
    assert_eq!(s.iam.create_calls(), 0);
    assert!(r.store().history("export").await.unwrap().is_empty());
}
