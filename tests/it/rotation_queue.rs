//! Issue 12, item 4: the processor and the rotator meet through the rotation queue, never
//! through a shared table. An offboarding of a declared secret's holder rotates the secret end to
//! end; a rotator whose state is nowhere near the processor's database still gets the request,
//! because the queue is the only way a request travels.

use gatehouse_app::{self as app, Components};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::ports::{QueueProducer, StateStore};
use gatehouse_e2e::{Options, okta_fixture, spawn_app, wait_until};
use gatehouse_platform::config::Config;
use gatehouse_rotation::memory::MemoryRotations;
use gatehouse_rotation::sqlite::SqliteRotations;
use gatehouse_rotation::{Phase, Rotation, RotationStore, SystemClock};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_testkit::gcp_sa_keys_fake::FakeSaKeys;
use gatehouse_testkit::secret_manager_fake::FakeSecretManager;
use std::sync::Arc;

const SA: &str = "svc-export@gatehouse-test.iam.gserviceaccount.com";
const SECRET: &str = "projects/gatehouse-test/secrets/svc-export-key";
/// The person the deactivation fixture offboards.
const HOLDER: &str = "john.doe@example.com";

/// A GCP service-account key kept in Secret Manager (fakes), held by [`HOLDER`].
struct Gcp {
    sm: FakeSecretManager,
    iam: FakeSaKeys,
    old_key: String,
}

impl Gcp {
    async fn start() -> Gcp {
        let sm = FakeSecretManager::start().await;
        let iam = FakeSaKeys::start().await;
        iam.set_token(&sm.token());
        iam.add_service_account(SA);
        let file = iam.add_key(SA);
        let old_key = iam.keys(SA)[0].0.clone();
        sm.create_secret(SECRET);
        sm.add_version(SECRET, &file);
        Gcp { sm, iam, old_key }
    }

    fn toml(&self) -> String {
        format!(
            "[rotator]\npoll_interval = \"50ms\"\n[rotator.gcp]\nsecret_manager_url = {:?}\niam_url = {:?}\naccess_token = {:?}\n\n\
             [[rotator.secrets]]\nname = \"export\"\ngrace = \"1h\"\ndestroy_after = \"1d\"\nholders = [{HOLDER:?}]\n\
             kind = {{ type = \"gcp_service_account_key\", email = {SA:?} }}\n\
             store = {{ type = \"gcp_secret_manager\", name = {SECRET:?} }}\n",
            self.sm.url(),
            self.iam.url(),
            self.sm.token()
        )
    }

    /// The secret's readers now get a new key, one that works.
    fn rotated(&self) -> bool {
        let Some(latest) = self.sm.latest(SECRET) else {
            return false;
        };
        self.iam.can_authenticate(&latest) && !latest.contains(&self.old_key)
    }
}

/// Rotation requests and rotations kept in `db`'s rotator tables (`rotation_inbox`,
/// `rotations`).
async fn rotator_rows(db: &Sqlite) -> (usize, usize) {
    let rotations = SqliteRotations::new(db.clone());
    (
        rotations.pending_requests().await.unwrap().len(),
        rotations.history("export").await.unwrap().len(),
    )
}

/// `gatehouse standalone` with a declared secret: an Okta deactivation of its holder, over HTTP,
/// ends with the secret rotated (events queue → processor → rotation queue → rotator).
#[tokio::test]
async fn offboarding_a_holder_over_http_rotates_the_secret_through_the_rotation_queue() {
    let gcp = Gcp::start().await;
    let app = spawn_app(Options {
        extra_toml: gcp.toml(),
        ..Default::default()
    })
    .await;
    app.deliver(&okta_fixture(
        "event-hook.user.lifecycle.deactivate.constructed.json",
    ))
    .await;
    wait_until("the holder's secret rotated", || {
        let ok = gcp.rotated();
        async move { ok }
    })
    .await;
    let rotations = SqliteRotations::new(app.store.clone());
    let history = rotations.history("export").await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].trigger, "holder_offboarded");
    let rotation_queue = app.store.rotation_queue();
    wait_until("the request acked", || {
        let q = rotation_queue.clone();
        async move { q.depth().await.unwrap() == 0 }
    })
    .await;
    app.stop().await;
}

fn okta(id: &str, secs: i64, event: IdentityEvent) -> Envelope {
    Envelope {
        version: Envelope::VERSION,
        id: EnvelopeId(id.into()),
        source: Source::Okta,
        subject: Subject {
            key: "okta:00uholder".into(),
            email: Some(HOLDER.into()),
            display_name: None,
        },
        occurred_at: chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
        received_at: chrono::Utc::now(),
        event,
        profile: [("email".to_string(), HOLDER.to_string())].into_iter().collect(),
        source_event_type: "test".into(),
        raw: serde_json::Value::Null,
        trace_parent: None,
    }
}

/// The processor alone (no rotator in its process), and a rotator whose state is in memory, far
/// from the processor's database: the holder's offboarding still rotates the secret, because the
/// request travels as an envelope on the rotation queue and the rotator takes it from there. The
/// processor writes no rotation-request row anywhere; if it wrote one to a table instead of
/// publishing, this rotator would never see it.
#[tokio::test]
async fn the_rotator_learns_of_a_request_only_from_the_rotation_queue() {
    let gcp = Gcp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
             [processor]\npoll_interval = \"10ms\"\n{}",
            dir.path().join("data").display().to_string(),
            gcp.toml()
        ),
    )
    .unwrap();
    let cfg = Config::load(Some(&path), |_| None).unwrap();
    let processor = app::start(
        &cfg,
        Components {
            ingress: false,
            processor: true,
        },
    )
    .await
    .unwrap();
    let db = processor.store.clone();
    let offboarding = okta("okta:acme:deactivate-1", 2, IdentityEvent::UserDeactivated);
    db.publish(&[okta("okta:acme:activate-1", 1, IdentityEvent::UserActivated)])
        .await
        .unwrap();
    db.publish(std::slice::from_ref(&offboarding)).await.unwrap();
    wait_until("the offboarding processed", || {
        let (db, id) = (db.clone(), offboarding.id.clone());
        async move { db.is_processed(&id).await.unwrap() }
    })
    .await;
    // Published, durably, before the offboarding was acked; no table row written for it.
    let rotation_queue = db.rotation_queue();
    assert_eq!(rotation_queue.depth().await.unwrap(), 1);
    assert_eq!(
        rotator_rows(&db).await,
        (0, 0),
        "the processor records no request"
    );

    let state = MemoryRotations::default();
    let rotator = gatehouse_rotation::build::rotator_with(&cfg, state.clone(), None, Arc::new(SystemClock))
        .await
        .unwrap()
        .with_requests(Arc::new(
            Sqlite::open(&cfg.data_dir).await.unwrap().rotation_queue(),
        ));
    let report = rotator.tick().await.unwrap();
    assert_eq!(report.received, 1, "{report:?}");
    assert_eq!(
        report.started,
        vec![("export".to_string(), "holder_offboarded".to_string())]
    );
    let history = state.history("export").await.unwrap();
    assert_eq!(history[0].phase, Phase::Finished, "{history:?}");
    // One request per secret and offboarding event, keyed by the offboarding's envelope id.
    let expected = Rotation::for_request(
        "export",
        "holder_offboarded",
        "offboarding:okta:acme:deactivate-1:export",
        chrono::Utc::now(),
    );
    assert_eq!(history[0].id, expected.id);
    assert!(gcp.rotated(), "the holder's secret has a new working key");
    assert_eq!(rotation_queue.depth().await.unwrap(), 0, "acked once recorded");
    // The rotator's state never touched the processor's database.
    assert_eq!(rotator_rows(&db).await, (0, 0));
    // A second tick: nothing new (the request is handled).
    assert!(rotator.tick().await.unwrap().started.is_empty());
    processor.stop().await;
}
