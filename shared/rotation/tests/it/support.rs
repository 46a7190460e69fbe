//! Shared setup: moto's SDK configuration, a config file per test, a fresh SQLite database.

use chrono::{TimeZone, Utc};
use gatehouse_domain::ports::{BackendError, RotationRequest};
use gatehouse_platform::config::Config;
use gatehouse_rotation::sqlite::SqliteRotations;
use gatehouse_rotation::{ManualClock, Phase, RotationStore, Rotator};
use gatehouse_store::sqlite::Sqlite;
use std::sync::Arc;
use std::time::Duration;

/// A secret value-like string tests must never see outside its wrappers.
pub const AWS_TEST_SECRET: &str = "moto-admin-secret-never-logged";

pub fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: the rotation tests need moto. Run `make test`, or \
             scripts/with-servers.sh cargo test -p gatehouse-rotation"
        )
    })
}

pub async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "testing",
            AWS_TEST_SECRET,
            None,
            None,
            "test",
        ))
        .load()
        .await
}

/// A unique name per test (moto is shared).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn clock() -> ManualClock {
    ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap())
}

/// Load a TOML config (data dir inside `dir`).
pub fn config(dir: &std::path::Path, toml: &str) -> Config {
    let path = dir.join("gatehouse.toml");
    let text = format!("data_dir = {:?}\n{toml}", dir.join("data"));
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path), |_| None).unwrap_or_else(|e| panic!("{e}"))
}

pub async fn db(cfg: &Config) -> Sqlite {
    Sqlite::open(&cfg.data_dir).await.unwrap()
}

/// A new rotator instance (as after a restart: nothing in memory but the config).
pub async fn rotator(
    cfg: &Config,
    clock: &ManualClock,
    aws: Option<aws_config::SdkConfig>,
) -> Rotator<SqliteRotations> {
    let db = db(cfg).await;
    let queue = Arc::new(db.rotation_queue());
    let store = SqliteRotations::new(db);
    // Requests reach it only as the services' do: through the rotation queue.
    let mut r = gatehouse_rotation::build::rotator_with(cfg, store, aws, Arc::new(clock.clone()))
        .await
        .unwrap()
        .with_requests(queue);
    r.settings_mut().test_delay = Duration::from_millis(10);
    r
}

/// Publish `request` to the embedded rotation queue of `db`, as the processor does: an envelope
/// carrying `IdentityEvent::RotationRequested` under the request's envelope id.
pub async fn publish_request(db: &Sqlite, request: &RotationRequest) -> Result<(), BackendError> {
    use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
    let env = Envelope {
        version: Envelope::VERSION,
        id: EnvelopeId(request.envelope_id.clone()),
        source: Source::Manual,
        subject: Subject {
            key: request.subject.clone(),
            email: None,
            display_name: None,
        },
        occurred_at: gatehouse_domain::clock::now(),
        received_at: gatehouse_domain::clock::now(),
        event: IdentityEvent::RotationRequested {
            provider: request.provider.clone(),
            reason: request.reason.clone(),
            secret: request.secret.clone(),
        },
        profile: Default::default(),
        source_event_type: "test".into(),
        raw: serde_json::Value::Null,
        trace_parent: None,
    };
    gatehouse_domain::ports::QueueProducer::publish(&db.rotation_queue(), &[env]).await
}

/// Run every due step (advancing the clock over grace periods) until the rotation is done,
/// calling `check` after every step.
pub async fn run_to_done<F, Fut>(r: &Rotator<SqliteRotations>, id: &str, clock: &ManualClock, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..20 {
        let row = r.store().get(id).await.unwrap().unwrap();
        if row.phase.is_terminal() {
            return;
        }
        if row.due_at > gatehouse_rotation::Clock::now(clock) {
            clock.advance(
                (row.due_at - gatehouse_rotation::Clock::now(clock))
                    .to_std()
                    .unwrap(),
            );
        }
        r.step(id).await.unwrap();
        check().await;
    }
    panic!("rotation {id} did not finish");
}

pub async fn phase(r: &Rotator<SqliteRotations>, id: &str) -> Phase {
    r.store().get(id).await.unwrap().unwrap().phase
}
