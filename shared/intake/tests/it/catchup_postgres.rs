//! Issue 18: with `[state] backend = "postgres"`, the Graph deltaLinks and the Google channels
//! and cursor land in PostgreSQL (shared by every ingress replica), not in the local SQLite
//! file. Needs the throwaway cluster: `scripts/with-servers.sh cargo test -p gatehouse-intake
//! --test it catchup_postgres`.

use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::{BackendError, QueueProducer};
use gatehouse_intake::ingress::{Deps, google_upkeep, graph};
use gatehouse_platform::config::Config;
use gatehouse_store::catchup_state::CatchupStore;
use gatehouse_store::postgres::Postgres;
use gatehouse_store::sqlite::Sqlite;
use gatehouse_store::state::AnyState;
use gatehouse_testkit::google_reports_fake::FakeGoogleReports;
use gatehouse_testkit::graph_fake::FakeGraph;
use secrecy::SecretString;
use std::sync::Arc;

#[derive(Clone, Default)]
struct Discard;

impl QueueProducer for Discard {
    async fn publish(&self, _: &[Envelope]) -> Result<(), BackendError> {
        Ok(())
    }
}

#[tokio::test]
async fn graph_delta_links_and_google_channels_land_in_postgres() {
    let url = SecretString::from(gatehouse_testkit::postgres::fresh_database().await);
    let pg = Postgres::connect(&url, 2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = Sqlite::open(dir.path()).await.unwrap();

    let graph_fake = FakeGraph::start().await;
    graph_fake.add_user("u1", "ann@example.com", "Ann Example");
    let google_fake = FakeGoogleReports::start("ya29.fake-access-token").await;
    google_fake.set_now(gatehouse_domain::clock::now());
    let mut config = Config::defaults();
    config.graph = toml::from_str(&graph_fake.toml()).unwrap();
    config.google = toml::from_str(&format!(
        "admin_url = {:?}\nnotification_url = \"https://gatehouse.example.com/hooks/google\"\n\
         channel_secret = \"a-long-random-channel-secret-0042\"\naccess_token = \"ya29.fake-access-token\"\n",
        google_fake.url()
    ))
    .unwrap();
    let deps = Deps {
        queue: Discard,
        store: local.clone(),
        state: AnyState::Postgres(pg.clone()),
        config: Arc::new(config),
    };

    let svc = graph::service(&deps).expect("graph configured");
    svc.delta_catch_up(gatehouse_domain::clock::now(), true)
        .await
        .unwrap();
    let link = pg
        .catchup_get("graph:users")
        .await
        .unwrap()
        .expect("deltaLink in postgres");
    assert!(link.position.contains("deltatoken"), "{}", link.position);
    assert_eq!(
        local.catchup_get("graph:users").await.unwrap(),
        None,
        "not in the local file"
    );

    let upkeep = google_upkeep::upkeep(&deps).expect("google configured");
    let made = upkeep.keep_channels().await.unwrap();
    assert_eq!(made.created.len(), 1);
    let live = pg.google_channels_live().await.unwrap();
    assert_eq!(
        live.iter().map(|c| &c.channel_id).collect::<Vec<_>>(),
        made.created.iter().collect::<Vec<_>>()
    );
    assert!(local.google_channels_live().await.unwrap().is_empty());
    upkeep.catch_up().await.unwrap();
    let source = google_upkeep::SOURCE;
    assert!(
        pg.catchup_get(source).await.unwrap().is_some(),
        "google cursor in postgres"
    );
    assert!(local.catchup_get(source).await.unwrap().is_none());
}
