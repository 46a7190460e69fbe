//! Delta catch-up against the fake Graph: a `missed` lifecycle notification resumes from the
//! stored deltaLink, the changes are acted on once, and the new deltaLink is stored.

use super::*;
use crate::ingress::test_support::MemQueue;
use gatehouse_domain::envelope::IdentityEvent;
use gatehouse_platform::config::GraphConfig;
use gatehouse_store::sqlite::Sqlite;
use gatehouse_testkit::graph_fake::FakeGraph;

struct World {
    fake: FakeGraph,
    store: Sqlite,
    queue: MemQueue,
    svc: GraphService<MemQueue>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let fake = FakeGraph::start().await;
    for (id, mail) in [("u1", "ann"), ("u2", "bob"), ("u3", "cy"), ("u4", "dee")] {
        fake.add_user(id, &format!("{mail}@example.com"), &format!("{mail} Example"));
    }
    fake.add_group("g1", "Analysts");
    fake.set_members("g1", &["u1", "u2"]);
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    let queue = MemQueue::default();
    let cfg: GraphConfig = toml::from_str(&fake.toml()).unwrap();
    let svc = GraphService::new(store.clone(), queue.clone(), &cfg)
        .unwrap()
        .unwrap();
    World {
        fake,
        store,
        queue,
        svc,
        _dir: dir,
    }
}

impl World {
    /// Store a `missed` lifecycle notification and work the inbox until it is empty.
    async fn missed(&self, n: u32) {
        let body = serde_json::json!({
            "subscriptionId": "sub-users", "lifecycleEvent": "missed",
            "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95", "clientState": "x", "id": format!("m{n}"),
        });
        let key = gatehouse_domain::graph::Notification::from_value(body.clone())
            .unwrap()
            .key();
        self.store
            .graph_inbox_put(&[(key, body.to_string())], gatehouse_domain::clock::now())
            .await
            .unwrap();
        self.drain().await;
    }

    async fn drain(&self) {
        for _ in 0..20 {
            if self
                .svc
                .process_inbox(gatehouse_domain::clock::now())
                .await
                .unwrap()
                == 0
            {
                return;
            }
        }
        panic!("the inbox does not drain");
    }

    fn events(&self) -> Vec<(String, IdentityEvent)> {
        self.queue
            .published
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e.subject.email.clone().unwrap_or_else(|| e.subject.key.clone()),
                    e.event.clone(),
                )
            })
            .collect()
    }

    fn full_listings(&self) -> usize {
        self.fake
            .calls()
            .iter()
            .filter(|c| c.path == "/v1.0/users")
            .count()
    }
}

#[tokio::test]
async fn missed_resumes_from_the_stored_delta_link_and_applies_each_change_once() {
    let w = world().await;
    // Start-up without a deltaLink: nothing to resume, nothing asked.
    let r = w
        .svc
        .delta_catch_up(gatehouse_domain::clock::now(), false)
        .await
        .unwrap();
    assert_eq!(r, DeltaReport::default());
    assert!(w.fake.calls().is_empty());
    // A baseline for now (no listing), as when the subscription is created.
    let r = w
        .svc
        .delta_catch_up(gatehouse_domain::clock::now(), true)
        .await
        .unwrap();
    assert_eq!(r.baselined, ["users", "groups"]);
    let before = w.store.catchup_get("graph:users").await.unwrap().unwrap();
    let before_groups = w.store.catchup_get("graph:groups").await.unwrap().unwrap();
    assert!(before.position.contains("$deltatoken="), "{}", before.position);
    assert_eq!(w.full_listings(), 0);

    // While notifications are missed: one disabled, one deleted, one group gains a member.
    w.fake.set_account_enabled("u1", false);
    w.fake.delete_user("u4");
    w.fake.set_members("g1", &["u1", "u2", "u3"]);
    w.fake.set_page_size(1);
    w.missed(1).await;

    let events = w.events();
    assert!(
        events.contains(&("ann@example.com".into(), IdentityEvent::UserDeactivated)),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(s, e)| s.contains("u4") && *e == IdentityEvent::UserDeleted),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(s, e)| s == "cy@example.com"
            && matches!(e, IdentityEvent::GroupMemberAdded { group } if group.id == "g1")),
        "{events:?}"
    );
    assert_eq!(w.full_listings(), 0, "delta, not a full listing");
    // Pages were followed (page size 1) and the new deltaLink stored.
    assert!(
        w.fake
            .calls()
            .iter()
            .any(|c| c.query_param("$skiptoken").is_some())
    );
    let after = w.store.catchup_get("graph:users").await.unwrap().unwrap();
    assert_ne!(after.position, before.position);
    let n = events.len();

    // A second `missed` with nothing new: nothing published.
    w.missed(2).await;
    assert_eq!(w.events().len(), n);

    // A crash after the rows but before the new deltaLink: the replayed round adds nothing.
    w.store.catchup_put("graph:users", &before).await.unwrap();
    w.store.catchup_put("graph:groups", &before_groups).await.unwrap();
    let r = w
        .svc
        .delta_catch_up(gatehouse_domain::clock::now(), true)
        .await
        .unwrap();
    assert!(r.resumed.iter().all(|(_, n)| *n > 0), "{r:?}");
    w.drain().await;
    assert_eq!(w.events().len(), n, "each change once");
}

#[tokio::test]
async fn throttling_is_retried_and_an_expired_delta_link_falls_back_to_a_listing() {
    let w = world().await;
    w.svc
        .delta_catch_up(gatehouse_domain::clock::now(), true)
        .await
        .unwrap();
    w.fake.set_retry_after_secs(3);
    w.fake.fail_next(429, 1);
    let e = w
        .svc
        .delta_catch_up(gatehouse_domain::clock::now(), true)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "graph delta: throttled (retry after Some(3s))");

    // Tokens past their lifetime answer 410: a new baseline, and `missed` lists the tenant.
    w.fake.expire_delta_tokens();
    w.fake.set_account_enabled("u2", false);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    w.missed(1).await;
    assert_eq!(w.full_listings(), 1);
    assert!(
        w.events()
            .contains(&("bob@example.com".into(), IdentityEvent::UserDeactivated))
    );
    assert!(
        handle
            .render()
            .contains("gatehouse_intake_catchup_lag_seconds{source=\"graph\"} 0"),
        "{}",
        handle.render()
    );
}

/// Issue 18: a change Graph never notified is caught by the periodic round after one interval
/// (the interval is driven by the test, no waiting), from the stored deltaLink, without a listing.
#[tokio::test]
async fn a_change_graph_never_notified_is_applied_after_one_delta_interval() {
    let w = world().await;
    w.svc
        .delta_catch_up(gatehouse_domain::clock::now(), true)
        .await
        .unwrap();
    let delta_calls = |f: &FakeGraph| f.calls().iter().filter(|c| c.path.ends_with("/delta")).count();
    let baseline_calls = delta_calls(&w.fake);
    let tick = std::sync::Arc::new(tokio::sync::Notify::new());
    let (trigger, shutdown) = gatehouse_platform::shutdown::Shutdown::new();
    let ticks = tick.clone();
    let task = tokio::spawn(super::super::delta_loop(
        w.svc.clone(),
        move || {
            let t = ticks.clone();
            async move { t.notified().await }
        },
        shutdown,
    ));
    // The round at start: nothing changed yet.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while delta_calls(&w.fake) < baseline_calls + 2 {
        assert!(tokio::time::Instant::now() < deadline, "no delta round at start");
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    w.drain().await;
    assert!(w.events().is_empty(), "{:?}", w.events());

    // Graph changes a user and never notifies; one interval passes.
    w.fake.set_account_enabled("u2", false);
    tick.notify_one();
    let want = ("bob@example.com".to_string(), IdentityEvent::UserDeactivated);
    while !w.events().contains(&want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change was not applied: {:?}",
            w.events()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        w.svc.process_inbox(gatehouse_domain::clock::now()).await.unwrap();
    }
    assert_eq!(w.full_listings(), 0, "from the deltaLink, not a listing");
    trigger.trigger();
    task.await.unwrap();
}
