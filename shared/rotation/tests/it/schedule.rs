//! Schedules under tokio's paused clock: no real waiting. In-memory kind, store and state.

use chrono::{TimeZone, Utc};
use futures::future::BoxFuture;
use gatehouse_platform::config::{KindConfig, OutOfBand, SecretConfig, StoreConfig};
use gatehouse_rotation::credential::{KeyInfo, StoredVersion};
use gatehouse_rotation::kinds::{Kind, Res};
use gatehouse_rotation::memory::MemoryRotations;
use gatehouse_rotation::stores::SecretStore;
use gatehouse_rotation::{
    Credential, Declared, ErrorKind, Phase, RotationError, RotationStore, Rotator, Settings, TokioClock,
};
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct MemKind {
    keys: Mutex<Vec<String>>,
    seq: AtomicU64,
    broken: AtomicBool,
    /// Creation times (RFC 3339) of keys made before the test; others list their id.
    created: Mutex<std::collections::BTreeMap<String, String>>,
}

impl Kind for MemKind {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn principal(&self) -> &str {
        "svc"
    }
    fn list(&self) -> BoxFuture<'_, Res<Vec<KeyInfo>>> {
        let keys = self.keys.lock().unwrap().clone();
        let created = self.created.lock().unwrap().clone();
        Box::pin(async move {
            Ok(keys
                .into_iter()
                .map(|id| KeyInfo {
                    created: created.get(&id).cloned().unwrap_or_else(|| id.clone()),
                    id,
                    active: true,
                })
                .collect())
        })
    }
    fn create(&self) -> BoxFuture<'_, Res<Credential>> {
        let id = format!("k{:04}", self.seq.fetch_add(1, Ordering::SeqCst));
        self.keys.lock().unwrap().push(id.clone());
        Box::pin(async move { Ok(Credential::new(id.clone(), SecretString::from(id))) })
    }
    fn test<'a>(&'a self, c: &'a Credential) -> BoxFuture<'a, Res<()>> {
        let ok = !self.broken.load(Ordering::SeqCst) && self.keys.lock().unwrap().contains(&c.key_id);
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err(RotationError::new(ErrorKind::Unauthorized, "refused"))
            }
        })
    }
    fn disable<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Res<()>> {
        self.delete(id)
    }
    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Res<()>> {
        self.keys.lock().unwrap().retain(|k| k != id);
        Box::pin(async { Ok(()) })
    }
    fn parse(&self, v: SecretString) -> Res<Credential> {
        Ok(Credential::new(v.expose_secret().to_string(), v))
    }
}

#[derive(Default)]
struct MemStore {
    versions: Mutex<Vec<String>>,
}

type Parse<'a> = &'a (dyn Fn(SecretString) -> Res<Credential> + Send + Sync);

impl SecretStore for MemStore {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn stages(&self) -> bool {
        false
    }
    fn current<'a>(&'a self, parse: Parse<'a>) -> BoxFuture<'a, Res<Option<StoredVersion>>> {
        let versions = self.versions.lock().unwrap().clone();
        let v = versions.last().map(|v| (versions.len() - 1, v.clone()));
        Box::pin(async move {
            v.map(|(i, v)| {
                Ok(StoredVersion {
                    version: i.to_string(),
                    credential: parse(SecretString::from(v))?,
                })
            })
            .transpose()
        })
    }
    fn put<'a>(&'a self, _t: &'a str, c: &'a Credential) -> BoxFuture<'a, Res<String>> {
        let mut v = self.versions.lock().unwrap();
        v.push(c.key_id.clone());
        let n = (v.len() - 1).to_string();
        Box::pin(async move { Ok(n) })
    }
    fn find<'a>(
        &'a self,
        _t: &'a str,
        _k: &'a str,
        _p: Parse<'a>,
    ) -> BoxFuture<'a, Res<Option<StoredVersion>>> {
        Box::pin(async { Ok(None) })
    }
    fn promote<'a>(&'a self, _n: &'a str, _o: Option<&'a str>) -> BoxFuture<'a, Res<()>> {
        Box::pin(async { Ok(()) })
    }
    fn discard<'a>(&'a self, _v: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async { Ok(()) })
    }
    fn retire<'a>(&'a self, _v: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async { Ok(()) })
    }
    fn destroy<'a>(&'a self, _v: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async { Ok(()) })
    }
}

fn secret(schedule: &str) -> SecretConfig {
    SecretConfig {
        name: "hourly".into(),
        kind: KindConfig::LookerApi3 { user_id: "1".into() },
        store: StoreConfig::GcpSecretManager {
            name: "projects/p/secrets/s".into(),
        },
        schedule: Some(schedule.into()),
        grace: Duration::from_secs(600),
        destroy_after: Duration::from_secs(600),
        holders: vec![],
        on_out_of_band: OutOfBand::Alert,
    }
}

fn rotator(kind: Arc<MemKind>, db: MemoryRotations) -> Rotator<MemoryRotations> {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 8, 30, 0).unwrap();
    Rotator::new(
        vec![Declared::new(
            secret("0 * * * *"),
            kind,
            Arc::new(MemStore::default()),
        )],
        db,
        Arc::new(TokioClock::starting_at(start)),
        Settings {
            poll_interval: Duration::from_secs(3600 * 24),
            retry_min_delay: Duration::from_secs(15 * 60),
            test_delay: Duration::from_secs(1),
            ..Settings::default()
        },
    )
}

#[tokio::test(start_paused = true)]
async fn an_hourly_schedule_rotates_every_hour_without_real_waiting() {
    let kind = Arc::new(MemKind::default());
    let db = MemoryRotations::default();
    let r = Arc::new(rotator(kind.clone(), db.clone()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let r = r.clone();
        async move { r.run(async { stop_rx.await.unwrap_or(()) }).await }
    });
    // 08:30 → 11:45: occurrences at 09:00, 10:00, 11:00.
    tokio::time::sleep(Duration::from_secs(3 * 3600 + 15 * 60)).await;
    let history = db.history("hourly").await.unwrap();
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(history.iter().all(|h| h.trigger == "schedule"));
    let starts: Vec<String> = history
        .iter()
        .map(|h| h.started_at.format("%H:%M").to_string())
        .collect();
    assert_eq!(starts, ["09:00", "10:00", "11:00"]);
    // Each old key was revoked 10 minutes (grace) after its successor was promoted.
    assert!(history[..2].iter().all(|h| h.phase == Phase::Done));
    assert_eq!(kind.keys.lock().unwrap().len(), 1);
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_rotation_backs_off_then_retries() {
    let kind = Arc::new(MemKind::default());
    kind.broken.store(true, Ordering::SeqCst);
    let db = MemoryRotations::default();
    let r = Arc::new(rotator(kind.clone(), db.clone()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let r = r.clone();
        async move { r.run(async { stop_rx.await.unwrap_or(()) }).await }
    });
    // 09:00 fails; retries after 15 min (09:15 fails), then 30 min (09:45 fails).
    tokio::time::sleep(Duration::from_secs(3600 + 20 * 60)).await;
    let history = db.history("hourly").await.unwrap();
    let triggers: Vec<(&str, String)> = history
        .iter()
        .map(|h| (h.trigger.as_str(), h.started_at.format("%H:%M").to_string()))
        .collect();
    assert_eq!(
        triggers,
        [
            ("schedule", "09:00".to_string()),
            ("retry", "09:15".to_string()),
            ("retry", "09:45".to_string())
        ]
    );
    assert!(history.iter().all(|h| h.phase == Phase::RolledBack));
    assert!(kind.keys.lock().unwrap().is_empty(), "every new key was removed");
    // Fixed: the next retry (10:45, or the 10:00 schedule during backoff is skipped) succeeds.
    kind.broken.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let history = db.history("hourly").await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        (last.trigger.as_str(), last.phase),
        ("retry", Phase::Finished),
        "{history:?}"
    );
    assert_eq!(db.secret_state("hourly").await.unwrap().failures, 0);
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}

/// `gatehouse_secret_age_seconds{secret}` on a paused clock: a never-rotated secret shows the
/// age of the key its store holds (as the provider lists it), or, with nothing to go by, the
/// time since the rotator first looked; after a rotation, the time since that rotation.
#[test]
fn secret_ages_count_from_the_key_or_the_last_rotation_and_never_vanish() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let ages = metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let start = Utc.with_ymd_and_hms(2026, 3, 2, 8, 30, 0).unwrap();
            // "daily": created outside Gatehouse 60 days ago, rotated every day at 09:00.
            let kind = Arc::new(MemKind::default());
            kind.keys.lock().unwrap().push("k-old".into());
            kind.created
                .lock()
                .unwrap()
                .insert("k-old".into(), "2026-01-01T08:30:00Z".into());
            let store = Arc::new(MemStore::default());
            store.versions.lock().unwrap().push("k-old".into());
            let daily = SecretConfig {
                name: "daily".into(),
                schedule: Some("0 9 * * *".into()),
                ..secret("")
            };
            // "empty": no schedule, nothing in its store yet.
            let empty = SecretConfig {
                name: "empty".into(),
                schedule: None,
                ..secret("")
            };
            let db = MemoryRotations::default();
            let r = Rotator::new(
                vec![
                    Declared::new(daily, kind.clone(), store),
                    Declared::new(empty, Arc::new(MemKind::default()), Arc::new(MemStore::default())),
                ],
                db.clone(),
                Arc::new(TokioClock::starting_at(start)),
                Settings::default(),
            );
            const DAY: f64 = 86_400.0;
            r.tick().await.unwrap();
            let first = r.report_ages().await;
            assert_eq!(
                first["daily"],
                60.0 * DAY,
                "the key the store holds is 60 days old"
            );
            assert_eq!(first["empty"], 0.0, "first seen now");
            tokio::time::advance(Duration::from_secs(20 * 60)).await; // 08:50
            r.tick().await.unwrap();
            let before = r.report_ages().await;
            assert_eq!(before["daily"], 60.0 * DAY + 1200.0);
            assert_eq!(before["empty"], 1200.0, "grows from when it was first seen");
            tokio::time::advance(Duration::from_secs(10 * 60)).await; // 09:00: rotation
            let report = r.tick().await.unwrap();
            assert_eq!(report.started, [("daily".to_string(), "schedule".to_string())]);
            assert_eq!(db.history("daily").await.unwrap()[0].phase, Phase::Finished);
            assert_eq!(r.report_ages().await["daily"], 0.0, "a new credential");
            tokio::time::advance(Duration::from_secs(5 * 3600)).await; // 14:00, old key revoked
            r.tick().await.unwrap();
            assert_eq!(db.history("daily").await.unwrap()[0].phase, Phase::Revoked);
            r.report_ages().await
        })
    });
    assert_eq!(ages["daily"], 5.0 * 3600.0);
    assert_eq!(ages["empty"], 5.0 * 3600.0 + 1800.0);
    let text = handle.render();
    let gauge = |secret: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("gatehouse_secret_age_seconds{{secret=\"{secret}\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(gauge("daily"), Some(18_000.0), "{text}");
    assert_eq!(gauge("empty"), Some(19_800.0), "{text}");
}

/// Two rotators read one rotation request; the first rotates the secret to the end and marks the
/// request handled; the second, acting on what it read before that, must not rotate it again.
#[tokio::test(start_paused = true)]
async fn a_request_read_twice_rotates_its_secret_once() {
    let kind = Arc::new(MemKind::default());
    let db = MemoryRotations::default();
    let (first, second) = (
        rotator(kind.clone(), db.clone()),
        rotator(kind.clone(), db.clone()),
    );
    db.add_request(gatehouse_domain::ports::RotationRequest {
        envelope_id: "evt-1".into(),
        subject: "secret:hourly".into(),
        provider: "aws".into(),
        reason: "SECRET_ROTATE".into(),
        secret: Some("hourly".into()),
    });
    let report = first.tick().await.unwrap();
    assert_eq!(report.started.len(), 1, "{report:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
    while db.history("hourly").await.unwrap()[0].phase != Phase::Done {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotation did not finish"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        first.tick().await.unwrap();
    }
    assert!(db.pending_requests().await.unwrap().is_empty());

    db.reopen_request("evt-1");
    let report = second.tick().await.unwrap();
    assert!(report.started.is_empty(), "{report:?}");
    assert_eq!(db.history("hourly").await.unwrap().len(), 1, "rotated once");
    assert!(
        db.pending_requests().await.unwrap().is_empty(),
        "and marked handled"
    );
}
