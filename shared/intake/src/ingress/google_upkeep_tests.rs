//! Channel upkeep and catch-up against `FakeGoogleReports`, with `/hooks/google` in between.
//! Time is injected (the upkeep's, the intake's and the fake's clock are one), so six-hour channel
//! lifetimes pass without waiting.

use super::*;
use crate::ingress::google;
use crate::ingress::test_support::{MemQueue, send};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_store::state::AnyState;
use gatehouse_testkit::google_reports_fake::{FakeGoogleReports, Push, admin_activity};
use std::sync::Mutex;

const ACCESS: &str = "ya29.fake-access-token";
const SECRET: &str = "a-long-random-channel-secret-0042";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

struct World {
    fake: FakeGoogleReports,
    store: Sqlite,
    queue: MemQueue,
    now: Arc<Mutex<DateTime<Utc>>>,
    upkeep: GoogleUpkeep<MemQueue, Sqlite>,
    intake: axum::Router,
    _dir: Option<tempfile::TempDir>,
}

impl World {
    async fn new(start: DateTime<Utc>) -> World {
        let fake = FakeGoogleReports::start(ACCESS).await;
        Self::with(fake, start, None).await
    }

    /// A world on the state store in `data` (a restart), or on a fresh one.
    async fn with(fake: FakeGoogleReports, start: DateTime<Utc>, data: Option<&std::path::Path>) -> World {
        let dir = if data.is_none() {
            Some(tempfile::tempdir().unwrap())
        } else {
            None
        };
        let path = data.map_or_else(|| dir.as_ref().unwrap().path().to_path_buf(), |p| p.to_path_buf());
        let store = Sqlite::open(&path).await.unwrap();
        let queue = MemQueue::default();
        let now = Arc::new(Mutex::new(start));
        fake.set_now(start);
        let cfg: GoogleConfig = toml::from_str(&format!(
            "admin_url = {:?}\nnotification_url = \"https://gatehouse.example.com/hooks/google\"\n\
             channel_secret = {SECRET:?}\naccess_token = {ACCESS:?}\ncatchup_interval = \"5m\"\n",
            fake.url()
        ))
        .unwrap();
        cfg.validate().unwrap();
        let (clock_now, intake_now) = (now.clone(), now.clone());
        let clock: Clock = Arc::new(move || *clock_now.lock().unwrap());
        let client = ReportsClient::from_config(&cfg).unwrap().unwrap();
        let upkeep = GoogleUpkeep::new(client, store.clone(), queue.clone(), &cfg, clock.clone());
        let intake = google::build(
            queue.clone(),
            Vec::new(),
            Some((
                SecretString::from(SECRET.to_string()),
                AnyState::Sqlite(store.clone()),
            )),
            65536,
            Arc::new(move || *intake_now.lock().unwrap()),
        );
        World {
            fake,
            store,
            queue,
            now,
            upkeep,
            intake,
            _dir: dir,
        }
    }

    fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap() = at;
        self.fake.set_now(at);
    }

    async fn deliver(&self, push: &Push) -> StatusCode {
        let mut r = Request::post(google::PATH);
        for (k, v) in &push.headers {
            r = r.header(k.as_str(), v.as_str());
        }
        let (status, _) = send(
            self.intake.clone(),
            r.body(Body::from(push.body.clone())).unwrap(),
        )
        .await;
        status
    }

    fn published_ids(&self) -> Vec<String> {
        self.queue
            .published
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.id.0.clone())
            .collect()
    }
}

#[tokio::test]
async fn a_channel_is_renewed_across_its_expiry_without_a_gap() {
    let t0 = t("2026-05-01T00:00:00Z");
    let w = World::new(t0).await;
    let step = chrono::Duration::minutes(5);
    let mut overlap_seen = false;
    // Every push delivered so far (to replay a stopped channel's).
    let mut replaced: Vec<Push> = Vec::new();
    let mut created = 0;
    // 13 hours in 5-minute passes: two expiries of a 6-hour channel.
    for i in 0..=(13 * 12) {
        let now = t0 + step * i;
        w.set(now);
        let r = w.upkeep.keep_channels().await.unwrap();
        created += r.created.len();
        // At every pass a channel Google would push on is live, and its push is accepted.
        let activity = admin_activity("SUSPEND_USER", "liz@example.com", now, &format!("q{i}"));
        let pushes = w.fake.notifications(&activity);
        assert!(!pushes.is_empty(), "no live channel at {now}");
        for p in &pushes {
            assert_eq!(
                w.deliver(p).await,
                StatusCode::OK,
                "push on {} at {now}",
                p.channel_id
            );
        }
        if pushes.len() == 2 {
            overlap_seen = true;
            // Both channels delivered the same event: the same envelope id, applied once.
            let ids = w.published_ids();
            let (a, b) = (&ids[ids.len() - 2], &ids[ids.len() - 1]);
            assert_eq!(a, b);
        }
        replaced.extend(pushes.iter().cloned());
        for stopped in &r.stopped {
            // Notifications still carrying a stopped channel's (valid) token are refused.
            let late = replaced.iter().find(|p| &p.channel_id == stopped).unwrap();
            assert_eq!(w.deliver(late).await, StatusCode::UNAUTHORIZED);
        }
    }
    assert!(overlap_seen, "the new channel existed before the old one stopped");
    assert_eq!(created, 3, "one channel, renewed twice in 13 hours");
    let channels = w.fake.channels();
    assert_eq!(channels.iter().filter(|c| c.stopped).count(), 2, "{channels:?}");
    // Stop came after the successor's watch, and every channel was asked for its full lifetime.
    let calls = w.fake.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    let first_stop = paths.iter().position(|p| p.ends_with("/channels/stop")).unwrap();
    assert_eq!(paths.iter().filter(|p| p.ends_with("/watch")).take(2).count(), 2);
    assert!(
        paths[..first_stop]
            .iter()
            .filter(|p| p.ends_with("/watch"))
            .count()
            >= 2
    );
    for c in &channels {
        assert!(c.expires_at - t0 <= chrono::Duration::hours(19));
        assert!(c.token.as_deref().is_some_and(|tok| !tok.contains(SECRET)));
    }
}

#[tokio::test]
async fn a_forged_token_or_an_unknown_channel_is_refused() {
    let t0 = t("2026-05-01T00:00:00Z");
    let w = World::new(t0).await;
    w.upkeep.keep_channels().await.unwrap();
    let activity = admin_activity("DELETE_USER", "liz@example.com", t0, "q1");
    let push = w.fake.notifications(&activity).remove(0);
    assert_eq!(w.deliver(&push).await, StatusCode::OK);
    // The right token for another channel id, or another token for this one: refused.
    let mut other = push.clone();
    for (k, v) in &mut other.headers {
        if k == "X-Goog-Channel-ID" {
            *v = "not-a-channel-we-made".into();
        }
    }
    assert_eq!(w.deliver(&other).await, StatusCode::UNAUTHORIZED);
    let mut forged = push.clone();
    for (k, v) in &mut forged.headers {
        if k == "X-Goog-Channel-Token" {
            *v = channel_token(
                &SecretString::from("another-secret-of-length-32".to_string()),
                &push.channel_id,
            )
            .expose_secret()
            .to_string();
        }
    }
    assert_eq!(w.deliver(&forged).await, StatusCode::UNAUTHORIZED);
    // Past its expiry a channel is not accepted either.
    w.set(t0 + chrono::Duration::hours(7));
    assert_eq!(w.deliver(&push).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn catch_up_pages_honours_429_and_resumes_from_the_newest_event() {
    let t0 = t("2026-05-01T12:00:00Z");
    let fake = FakeGoogleReports::start(ACCESS).await;
    // 2 300 suspensions in the 40 minutes before, the newest 100 s before t0: three pages of at most 1 000.
    for i in 0..2300 {
        let at = t0 - chrono::Duration::seconds(2399 - i);
        fake.add_activity(admin_activity(
            "SUSPEND_USER",
            &format!("u{i}@example.com"),
            at,
            &format!("{i}"),
        ));
    }
    let w = World::with(fake, t0, None).await;
    w.fake.fail_next(&[429]);
    let e = w.upkeep.catch_up().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "google reports activities.list: throttled (retry after Some(1s))"
    );
    assert_eq!(retry_wait(&e), Duration::from_secs(1));
    assert!(
        w.store.catchup_get(SOURCE).await.unwrap().is_none(),
        "nothing stored on failure"
    );

    let r = w.upkeep.catch_up().await.unwrap();
    assert_eq!((r.activities, r.envelopes, r.skipped), (2300, 2300, 0));
    assert_eq!(
        r.start,
        Some(t0 - chrono::Duration::hours(1)),
        "catchup_start on the first pass"
    );
    let ids = w.published_ids();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 2300);
    let lists: Vec<_> = w
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.method == "GET" && c.status == 200)
        .collect();
    assert_eq!(lists.len(), 3, "three pages");
    assert!(lists[1].query_param("pageToken").is_some());
    // The same ids a push of the same activity produces.
    let sample = admin_activity(
        "SUSPEND_USER",
        "u7@example.com",
        t0 - chrono::Duration::seconds(2392),
        "7",
    );
    let pushed = gatehouse_domain::google::parse_activity(&serde_json::to_vec(&sample).unwrap(), t0).unwrap();
    assert!(ids.contains(&pushed[0].id.0));

    // The newest event was 100 s before t0; the overlap (10 min) is further back: resume there.
    let c = w.store.catchup_get(SOURCE).await.unwrap().unwrap();
    assert_eq!(c.position, "2026-05-01T11:58:20.000Z");
    assert_eq!(c.covered_until, t0);
    w.set(t0 + chrono::Duration::minutes(5));
    let r = w.upkeep.catch_up().await.unwrap();
    assert_eq!(r.start, Some(t("2026-05-01T11:58:20Z")));
    assert_eq!(r.activities, 1, "only the newest event is listed again");
    assert_eq!(r.lag, Duration::from_secs(300));
}

#[tokio::test]
async fn after_a_restart_the_missed_offboardings_are_caught_up_and_the_lag_falls_back() {
    let t0 = t("2026-05-01T08:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeGoogleReports::start(ACCESS).await;
    {
        let w = World::with(fake.clone(), t0, Some(dir.path())).await;
        w.upkeep.catch_up().await.unwrap();
    }
    // Gatehouse is down for two hours; 30 people are suspended or deleted meanwhile.
    let down = t0 + chrono::Duration::hours(2);
    for i in 0..30 {
        let ev = if i % 2 == 0 { "SUSPEND_USER" } else { "DELETE_USER" };
        let at = t0 + chrono::Duration::minutes(3 * i + 1);
        fake.add_activity(admin_activity(
            ev,
            &format!("p{i}@example.com"),
            at,
            &format!("x{i}"),
        ));
    }
    // Restart on the same state store.
    let w = World::with(fake, down, Some(dir.path())).await;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let first = w.upkeep.catch_up().await.unwrap();
    assert_eq!(first.envelopes, 30);
    assert_eq!(first.lag, Duration::from_secs(2 * 3600));
    let text = handle.render();
    assert!(
        text.contains("gatehouse_intake_catchup_lag_seconds{source=\"google_workspace\"} 7200"),
        "{text}"
    );
    let subjects: std::collections::BTreeSet<String> = w
        .queue
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.subject.key.clone())
        .collect();
    assert_eq!(subjects.len(), 30);
    // One interval later the lag is the interval: back under the poll interval bound.
    w.set(down + chrono::Duration::minutes(5));
    let next = w.upkeep.catch_up().await.unwrap();
    assert_eq!(next.lag, Duration::from_secs(300));
    assert_eq!(next.envelopes, 0, "the overlap window holds none of the 30");
    assert!(
        handle
            .render()
            .contains("gatehouse_intake_catchup_lag_seconds{source=\"google_workspace\"} 300")
    );
}
