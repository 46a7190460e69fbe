//! `gatehouse audit export|verify` and `gatehouse dlq list|show|redrive` as an operator runs them.

use crate::{bin, text};
use chrono::DateTime;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::ports::{LedgerEntry, QueueConsumer, QueueProducer, StateStore};
use gatehouse_store::sqlite::Sqlite;
use std::path::Path;
use std::time::Duration;

fn entry(n: i64) -> LedgerEntry {
    LedgerEntry {
        at: DateTime::from_timestamp_millis(1_700_000_000_000 + n * 1000).unwrap(),
        envelope_id: format!("env-{n}"),
        subject: "okta:00u1".into(),
        event: "user_deactivated".into(),
        rule: "offboarding.revoke_sessions".into(),
        call: HttpCall {
            method: Method::Delete,
            path: format!("/users/7/sessions/{n}"),
            body: None,
        },
        status: "ok".into(),
        target: "looker".into(),
        policy_digest: Some("d".repeat(64)),
        actor: Some("reconcile".into()),
    }
}

fn envelope(id: &str, subject: &str) -> Envelope {
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(id.into()),
        source: Source::Manual,
        subject: Subject {
            key: subject.into(),
            email: None,
            display_name: None,
        },
        occurred_at: gatehouse_domain::clock::now(),
        received_at: gatehouse_domain::clock::now(),
        event: IdentityEvent::UserActivated,
        profile: Default::default(),
        source_event_type: "test".into(),
        raw: serde_json::Value::Null,
    }
}

/// Run `gatehouse ARGS` with `GATEHOUSE_DATA_DIR=data` and extra variables.
fn run(data: &Path, args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut c = bin();
    c.args(args).env("GATEHOUSE_DATA_DIR", data);
    for (k, v) in vars {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let (out, err) = text(&o);
    (o.status.code(), out, err)
}

async fn tamper_sqlite(data: &Path, sql: &str) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("gatehouse.db").display()))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TRIGGER IF EXISTS ledger_no_update; DROP TRIGGER IF EXISTS ledger_no_delete; {sql}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_on_an_intact_ledger_and_names_the_first_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = Sqlite::open(&data).await.unwrap();
    db.append_ledger(&(1..=5).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    db.close().await;

    let (code, out, err) = run(&data, &["audit", "verify"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("ledger ok: 5 rows, head seq 5 hash "), "{out}");

    // The export carries the chain.
    let (code, out, _) = run(&data, &["audit", "export"], &[]);
    assert_eq!(code, Some(0));
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[1]["prev_hash"], rows[0]["hash"]);
    assert_eq!(rows[4]["hash"].as_str().unwrap().len(), 64);
    let (_, since, _) = run(
        &data,
        &["audit", "export", "--since", "2023-11-14T22:13:23Z"],
        &[],
    );
    assert_eq!(since.lines().count(), 3, "{since}");

    // Someone with the file edits row 2: verify fails and names it.
    tamper_sqlite(&data, "UPDATE ledger SET status = 'dry_run' WHERE seq = 2").await;
    let (code, _, err) = run(&data, &["audit", "verify"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("ledger row 2 was altered"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_sees_removed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = Sqlite::open(&data).await.unwrap();
    db.append_ledger(&(1..=5).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    db.close().await;
    tamper_sqlite(&data, "DELETE FROM ledger WHERE seq = 3").await;
    let (code, _, err) = run(&data, &["audit", "verify"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("before row 4 was removed"), "{err}");
    tamper_sqlite(&data, "DELETE FROM ledger WHERE seq = 5").await;
    let (_, _, err) = run(&data, &["audit", "verify"], &[]);
    assert!(
        err.contains("before row 4 was removed"),
        "still the first bad row: {err}"
    );
}

/// The same commands on PostgreSQL state (`GATEHOUSE_STATE=postgres`); the URL's password never
/// shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_and_verify_on_postgres() {
    let url = gatehouse_testkit::postgres::fresh_database().await;
    let db = gatehouse_store::postgres::Postgres::connect(&url.clone().into(), 2)
        .await
        .unwrap();
    db.append_ledger(&(1..=4).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    db.close().await;
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("GATEHOUSE_STATE", "postgres"),
        ("GATEHOUSE_DATABASE_URL", url.as_str()),
    ];
    let (code, out, err) = run(dir.path(), &["audit", "verify"], &vars);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("ledger ok: 4 rows"), "{out}");
    let (_, out, _) = run(dir.path(), &["audit", "export"], &vars);
    assert_eq!(out.lines().count(), 4);

    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::raw_sql("SET session_replication_role = replica; DELETE FROM ledger WHERE seq = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    let (code, out, err) = run(dir.path(), &["audit", "verify"], &vars);
    assert_eq!(code, Some(1));
    assert!(err.contains("before row 3 was removed"), "{err}");
    assert!(!out.contains("gatehouse:gatehouse") && !err.contains("gatehouse:gatehouse"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_show_and_redrive_on_the_embedded_queue() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = Sqlite::open(&data).await.unwrap();
    db.publish(&[envelope("e1", "s1"), envelope("e2", "s2")])
        .await
        .unwrap();
    db.enqueue_raw("raw", "s3", "not json").await.unwrap();
    for d in db.receive(10, Duration::from_secs(60)).await.unwrap() {
        let reason = if d.body == "not json" {
            "not a valid envelope"
        } else {
            "policy failed"
        };
        db.dead_letter(&d, reason).await.unwrap();
    }
    assert_eq!(db.queue_depth().await.unwrap(), 0);

    let (code, out, err) = run(&data, &["dlq", "list"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.iter().all(|l| l.contains("attempts=1")), "{out}");
    let raw_id = lines
        .iter()
        .find(|l| l.ends_with("not a valid envelope"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();

    let (code, out, _) = run(&data, &["dlq", "show", &raw_id], &[]);
    assert_eq!(code, Some(0));
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["body"], "not json");
    assert_eq!(shown["reason"], "not a valid envelope");

    let (code, _, err) = run(&data, &["dlq", "show", "999"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no dead letter with id 999"), "{err}");
    let (code, _, err) = run(&data, &["dlq", "redrive"], &[]);
    assert_eq!(code, Some(2), "an id or --all is required: {err}");

    let (code, out, _) = run(&data, &["dlq", "redrive", &raw_id], &[]);
    assert_eq!((code, out.trim()), (Some(0), "redriven 1"));
    assert_eq!(db.queue_depth().await.unwrap(), 1);
    let (code, out, _) = run(&data, &["dlq", "redrive", "--all"], &[]);
    assert_eq!((code, out.trim()), (Some(0), "redriven 2"));
    assert_eq!(db.queue_depth().await.unwrap(), 3);
    assert!(db.dead_letters().await.unwrap().is_empty());
    // Redriven envelopes are delivered again as fresh messages.
    let again = db.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|d| d.attempt == 1));
    db.close().await;
}
