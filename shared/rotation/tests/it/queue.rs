//! Issue 12, item 4: requests reach the rotator only through the rotation queue. Each delivery
//! is recorded in the rotator's own inbox before it is acked (at-least-once, deduplicated by
//! envelope id), and poison is dead-lettered at once with its reason.

use crate::support::{self, config, unique};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::ports::{QueueProducer, RotationRequest};
use gatehouse_rotation::memory::MemoryRotations;
use gatehouse_rotation::sqlite::SqliteRotations;
use gatehouse_rotation::{RotationStore, Rotator, SystemClock};
use gatehouse_store::sqlite::Sqlite;
use sqlx::Row;
use std::sync::Arc;

fn request(id: &str) -> RotationRequest {
    RotationRequest {
        envelope_id: id.into(),
        subject: "aws:iam-user:nobody".into(),
        provider: "aws".into(),
        reason: "access key created outside gatehouse".into(),
        secret: None,
    }
}

/// A rotator with no declared secret: every request it takes is recorded, then unmatched.
async fn rotator<S: RotationStore>(
    cfg: &gatehouse_platform::config::Config,
    store: S,
    queue: Sqlite,
) -> Rotator<S> {
    gatehouse_rotation::build::rotator_with(cfg, store, None, Arc::new(SystemClock))
        .await
        .unwrap()
        .with_requests(Arc::new(queue.rotation_queue()))
}

async fn inbox_rows(db: &Sqlite) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM rotation_inbox")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_request_is_acked_only_once_the_inbox_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let db = support::db(&cfg).await;
    support::publish_request(&db, &request("aws:evt-1"))
        .await
        .unwrap();

    // The inbox cannot be written (its database handle is closed): the request stays queued.
    let broken = support::db(&cfg).await;
    broken.close().await;
    let failing = rotator(&cfg, SqliteRotations::new(broken), db.clone()).await;
    let _ = failing.tick().await;
    assert_eq!(db.rotation_queue().depth().await.unwrap(), 1, "not acked");
    assert_eq!(inbox_rows(&db).await, 0);

    // Released at once: the next rotator takes it, records it, then acks it.
    let working = rotator(&cfg, SqliteRotations::new(db.clone()), db.clone()).await;
    let report = working.tick().await.unwrap();
    assert_eq!((report.received, report.unmatched), (1, 1), "{report:?}");
    assert_eq!(db.rotation_queue().depth().await.unwrap(), 0, "acked");
    assert_eq!(inbox_rows(&db).await, 1);
}

#[tokio::test]
async fn a_request_delivered_again_is_kept_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let db = support::db(&cfg).await;
    let store = MemoryRotations::default();
    let r = rotator(&cfg, store.clone(), db.clone()).await;
    let id = unique("aws:evt");
    support::publish_request(&db, &request(&id)).await.unwrap();
    let report = r.tick().await.unwrap();
    assert_eq!((report.received, report.unmatched), (1, 1), "{report:?}");
    // The processor published it again (a redelivered event, a lost ack): recorded already,
    // so it is acked and nothing is done twice.
    support::publish_request(&db, &request(&id)).await.unwrap();
    let report = r.tick().await.unwrap();
    assert_eq!((report.received, report.unmatched), (1, 0), "{report:?}");
    assert_eq!(db.rotation_queue().depth().await.unwrap(), 0);
    assert!(store.pending_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn poison_on_the_rotation_queue_is_dead_lettered_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let db = support::db(&cfg).await;
    let store = MemoryRotations::default();
    let r = rotator(&cfg, store.clone(), db.clone()).await;
    let queue = db.rotation_queue();
    queue
        .enqueue_raw("junk-1", "{\"not\": \"an envelope\"")
        .await
        .unwrap();
    let not_a_request = Envelope {
        version: Envelope::VERSION,
        id: EnvelopeId("okta:acme:evt-9".into()),
        source: Source::Okta,
        subject: Subject {
            key: "okta:00u9".into(),
            email: None,
            display_name: None,
        },
        occurred_at: gatehouse_domain::clock::now(),
        received_at: gatehouse_domain::clock::now(),
        event: IdentityEvent::UserActivated,
        profile: Default::default(),
        source_event_type: "user.lifecycle.activate".into(),
        raw: serde_json::Value::Null,
        trace_parent: None,
    };
    queue.publish(&[not_a_request]).await.unwrap();
    let report = r.tick().await.unwrap();
    assert_eq!((report.poison, report.received), (2, 0), "{report:?}");
    assert_eq!(queue.depth().await.unwrap(), 0);
    assert!(store.pending_requests().await.unwrap().is_empty());
    let mut reasons: Vec<String> = db
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0]
            .starts_with("not a rotation request: envelope okta:acme:evt-9 carries a user_activated event"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("not an envelope: "), "{reasons:?}");
}

/// The migrations of `dialect` up to `last` (the schema before the rotation queue), copied into
/// a directory of their own for a `Migrator`.
fn migrations_until(dialect: &str, last: u32) -> tempfile::TempDir {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../store/migrations")
        .join(dialect);
    let out = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let version: u32 = name[..4].parse().unwrap();
        if version <= last {
            std::fs::copy(&path, out.path().join(&name)).unwrap();
        }
    }
    out
}

/// Rows of the old `rotation_requests` table, one pending and one handled.
const OLD_ROWS: &str = "INSERT INTO rotation_requests (at, envelope_id, subject, provider, reason, secret, handled_at) VALUES
    ('2026-01-01T00:00:00.000Z', 'aws:pending-1', 'aws:iam-user:nobody', 'aws', 'access key created outside gatehouse', NULL, NULL),
    ('2026-01-01T00:00:00.000Z', 'aws:handled-1', 'aws:iam-user:nobody', 'aws', 'access key created outside gatehouse', NULL, '2026-01-01T00:00:01.000Z')";

/// Upgrading keeps every request the processor recorded before the rotation queue existed: the
/// table becomes the rotator's inbox (migration `sqlite/0021`), so the pending one is drained by
/// the rotator and the handled one keeps a redelivery of its envelope from counting again.
#[tokio::test]
async fn sqlite_upgrade_keeps_the_pending_requests_of_the_old_table() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let old = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(cfg.data_dir.join("gatehouse.db"))
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let until = migrations_until("sqlite", 20);
    sqlx::migrate::Migrator::new(until.path())
        .await
        .unwrap()
        .run(&old)
        .await
        .unwrap();
    sqlx::raw_sql(OLD_ROWS).execute(&old).await.unwrap();
    old.close().await;

    let db = support::db(&cfg).await; // runs 0021
    let store = SqliteRotations::new(db.clone());
    assert_eq!(
        store.pending_requests().await.unwrap(),
        vec![request("aws:pending-1")]
    );
    let r = rotator(&cfg, store.clone(), db.clone()).await;
    support::publish_request(&db, &request("aws:handled-1"))
        .await
        .unwrap();
    let report = r.tick().await.unwrap();
    assert_eq!(
        (report.received, report.unmatched),
        (1, 1),
        "only the pending one: {report:?}"
    );
    assert!(store.pending_requests().await.unwrap().is_empty());
}

/// The same on PostgreSQL (migration `postgres/0015`).
#[tokio::test]
async fn postgres_upgrade_keeps_the_pending_requests_of_the_old_table() {
    use gatehouse_rotation::postgres::PgRotations;
    use secrecy::SecretString;
    let url = gatehouse_testkit::postgres::fresh_database().await;
    let old = sqlx::postgres::PgPoolOptions::new().connect(&url).await.unwrap();
    let until = migrations_until("postgres", 14);
    sqlx::migrate::Migrator::new(until.path())
        .await
        .unwrap()
        .run(&old)
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO rotation_requests (at, envelope_id, subject, provider, reason, secret, handled_at) VALUES
         (now(), 'aws:pending-1', 'aws:iam-user:nobody', 'aws', 'access key created outside gatehouse', NULL, NULL),
         (now(), 'aws:handled-1', 'aws:iam-user:nobody', 'aws', 'access key created outside gatehouse', NULL, now())",
    )
    .execute(&old)
    .await
    .unwrap();
    old.close().await;

    let pg = gatehouse_store::postgres::Postgres::connect(&SecretString::from(url), 2)
        .await
        .unwrap(); // runs 0015
    let store = PgRotations::new(pg);
    assert_eq!(
        store.pending_requests().await.unwrap(),
        vec![request("aws:pending-1")]
    );
    assert!(
        !store
            .record_request(&request("aws:handled-1"), gatehouse_domain::clock::now())
            .await
            .unwrap()
    );
    store
        .mark_handled("aws:pending-1", gatehouse_domain::clock::now())
        .await
        .unwrap();
    assert!(store.pending_requests().await.unwrap().is_empty());
}
