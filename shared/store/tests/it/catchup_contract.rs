//! The catch-up store (Google channels, catch-up cursors) on SQLite and PostgreSQL: one contract.

use chrono::{DateTime, Duration, Utc};
use gatehouse_store::catchup_state::{CatchupStore, Cursor, GoogleChannel};
use gatehouse_store::sqlite::Sqlite;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn contract<S: CatchupStore>(s: &S) {
    let t0 = t("2026-05-01T00:00:00.123Z");
    let ch = |id: &str, created: DateTime<Utc>| GoogleChannel {
        channel_id: id.into(),
        resource_id: format!("res-{id}"),
        expires_at: created + Duration::hours(6),
        created_at: created,
    };
    assert!(s.google_channels_live().await.unwrap().is_empty());
    assert!(!s.google_channel_accepts("a", t0).await.unwrap(), "unknown");
    s.google_channel_put(&ch("b", t0 + Duration::hours(5)))
        .await
        .unwrap();
    s.google_channel_put(&ch("a", t0)).await.unwrap();
    let live = s.google_channels_live().await.unwrap();
    assert_eq!(
        live,
        vec![ch("a", t0), ch("b", t0 + Duration::hours(5))],
        "oldest first, ms kept"
    );
    assert!(
        s.google_channel_accepts("a", t0 + Duration::hours(1))
            .await
            .unwrap()
    );
    assert!(
        !s.google_channel_accepts("a", t0 + Duration::hours(6))
            .await
            .unwrap(),
        "expired"
    );
    s.google_channel_stopped("a", t0 + Duration::hours(5))
        .await
        .unwrap();
    assert!(
        !s.google_channel_accepts("a", t0 + Duration::hours(5))
            .await
            .unwrap(),
        "stopped"
    );
    assert_eq!(
        s.google_channels_live().await.unwrap(),
        vec![ch("b", t0 + Duration::hours(5))]
    );

    assert_eq!(s.catchup_get("google_workspace").await.unwrap(), None);
    let c1 = Cursor {
        position: "2026-05-01T00:00:00.000Z".into(),
        covered_until: t0,
    };
    s.catchup_put("google_workspace", &c1).await.unwrap();
    let c2 = Cursor {
        position: "https://graph.microsoft.com/v1.0/users/delta?$deltatoken=abc".into(),
        covered_until: t0 + Duration::minutes(5),
    };
    s.catchup_put("graph:users", &c2).await.unwrap();
    assert_eq!(s.catchup_get("google_workspace").await.unwrap(), Some(c1));
    let c3 = Cursor {
        position: "2026-05-01T00:05:00.000Z".into(),
        covered_until: t0 + Duration::minutes(10),
    };
    s.catchup_put("google_workspace", &c3).await.unwrap();
    assert_eq!(s.catchup_get("google_workspace").await.unwrap(), Some(c3));
    assert_eq!(s.catchup_get("graph:users").await.unwrap(), Some(c2));
}

#[tokio::test]
async fn sqlite_catchup_store() {
    let dir = tempfile::tempdir().unwrap();
    contract(&Sqlite::open(dir.path()).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_catchup_store() {
    let (db, _guard) = crate::state_contract::postgres().await;
    contract(&db).await;
}
