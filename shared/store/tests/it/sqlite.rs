//! Contract of the embedded SQLite queue and state store.

use crate::state_contract::identity_outcome;
use chrono::DateTime;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::ports::{
    DeletionChange, LedgerEntry, Outcome, QueueConsumer, QueueProducer, ScheduledDeletion, StateStore,
};
use gatehouse_store::sqlite::Sqlite;
use std::time::Duration;

fn env(id: &str, subject: &str, secs: i64) -> Envelope {
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
        occurred_at: DateTime::from_timestamp(secs, 0).unwrap(),
        received_at: gatehouse_domain::clock::now(),
        event: IdentityEvent::UserActivated,
        profile: Default::default(),
        source_event_type: "test".into(),
        raw: serde_json::Value::Null,
    }
}

async fn open() -> (tempfile::TempDir, Sqlite) {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(dir.path()).await.unwrap();
    (dir, db)
}

fn ids(batch: &[gatehouse_domain::ports::Delivery]) -> Vec<String> {
    batch
        .iter()
        .map(|d| Envelope::from_json(&d.body).unwrap().id.0)
        .collect()
}

#[tokio::test]
async fn publish_is_idempotent_per_envelope_id() {
    let (_d, db) = open().await;
    db.publish(&[env("a", "s1", 1), env("b", "s2", 1)]).await.unwrap();
    db.publish(&[env("a", "s1", 1)]).await.unwrap();
    assert_eq!(db.queue_depth().await.unwrap(), 2);
}

#[tokio::test]
async fn one_message_per_subject_at_a_time_oldest_first() {
    let (_d, db) = open().await;
    db.publish(&[
        env("late", "s1", 20),
        env("early", "s1", 10),
        env("other", "s2", 5),
    ])
    .await
    .unwrap();
    let first = db.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        ids(&first),
        vec!["other", "early"],
        "s1's newer message waits behind its older one"
    );
    assert!(
        db.receive(10, Duration::from_secs(60)).await.unwrap().is_empty(),
        "s1 is in flight"
    );
    db.ack(&first[1]).await.unwrap();
    let next = db.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(ids(&next), vec!["late"]);
}

#[tokio::test]
async fn unacked_comes_back_after_visibility_and_ack_removes() {
    let (_d, db) = open().await;
    db.publish(&[env("a", "s1", 1)]).await.unwrap();
    let got = db.receive(1, Duration::from_millis(50)).await.unwrap();
    assert_eq!(got[0].attempt, 1);
    assert!(db.receive(1, Duration::from_millis(50)).await.unwrap().is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let again = loop {
        let b = db.receive(1, Duration::from_secs(60)).await.unwrap();
        if !b.is_empty() {
            break b;
        }
        assert!(tokio::time::Instant::now() < deadline, "never redelivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(again[0].attempt, 2);
    db.ack(&again[0]).await.unwrap();
    assert_eq!(db.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn release_delays_and_a_stale_receipt_cannot_release() {
    let (_d, db) = open().await;
    db.publish(&[env("a", "s1", 1)]).await.unwrap();
    let first = db.receive(1, Duration::from_millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = db.receive(1, Duration::from_secs(60)).await.unwrap();
    assert_eq!(second[0].attempt, 2);
    // the first claim's receipt is stale: releasing with it must not make the message visible
    db.release(&first[0], Duration::ZERO).await.unwrap();
    assert!(db.receive(1, Duration::from_secs(60)).await.unwrap().is_empty());
    db.release(&second[0], Duration::from_secs(3600)).await.unwrap();
    assert!(
        db.receive(1, Duration::from_secs(60)).await.unwrap().is_empty(),
        "released with a delay"
    );
}

#[tokio::test]
async fn dead_letter_moves_the_message_with_its_reason() {
    let (_d, db) = open().await;
    db.enqueue_raw("x", "s1", "not json").await.unwrap();
    let got = db.receive(1, Duration::from_secs(60)).await.unwrap();
    db.dead_letter(&got[0], "not a valid envelope").await.unwrap();
    assert_eq!(db.queue_depth().await.unwrap(), 0);
    let dl = db.dead_letters().await.unwrap();
    assert_eq!(
        (dl[0].reason.as_str(), dl[0].body.as_str(), dl[0].attempts),
        ("not a valid envelope", "not json", 1)
    );
}

#[tokio::test]
async fn commit_records_processed_identity_and_deletions_atomically() {
    let (_d, db) = open().await;
    let id = EnvelopeId("e1".into());
    assert!(!db.is_processed(&id).await.unwrap());
    let due = DateTime::from_timestamp(100, 0).unwrap();
    db.commit(Outcome {
        envelope_id: id.clone(),
        identity: Some(Identity::new("s1")),
        converged: Some("fp".into()),
        deletion: DeletionChange::Schedule(ScheduledDeletion {
            subject: "s1".into(),
            email: "a@b.c".into(),
            due_at: due,
        }),
        base_version: None,
        offboarding: None,
    })
    .await
    .unwrap();
    assert!(db.is_processed(&id).await.unwrap());
    let s = db.load_subject("s1").await.unwrap().unwrap();
    assert_eq!(s.converged.as_deref(), Some("fp"));
    assert_eq!(s.version, 1);
    assert_eq!(db.due_deletions(due).await.unwrap().len(), 1);
    assert!(
        db.due_deletions(DateTime::from_timestamp(99, 0).unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    db.commit(Outcome {
        envelope_id: EnvelopeId("e2".into()),
        identity: Some(Identity::new("s1")),
        converged: None,
        deletion: DeletionChange::Cancel,
        base_version: Some(1),
        offboarding: None,
    })
    .await
    .unwrap();
    assert!(
        db.due_deletions(due).await.unwrap().is_empty(),
        "reactivation cancels the deletion"
    );
}

#[tokio::test]
async fn the_ledger_is_append_only() {
    let (dir, db) = open().await;
    let entry = LedgerEntry {
        // the ledger keeps millisecond precision
        at: DateTime::from_timestamp_millis(gatehouse_domain::clock::now().timestamp_millis()).unwrap(),
        envelope_id: "e".into(),
        subject: "s".into(),
        event: "t".into(),
        rule: "r".into(),
        target: "looker".into(),
        call: HttpCall {
            method: Method::Delete,
            path: "/users/1/sessions/2".into(),
            body: None,
        },
        status: "ok".into(),
        policy_digest: Some("ab".repeat(32)),
        actor: Some("operator:alice".into()),
    };
    let aws = LedgerEntry {
        target: "aws".into(),
        ..entry.clone()
    };
    db.append_ledger(&[entry.clone(), aws.clone()]).await.unwrap();
    let rows = db.ledger_since(None).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].entry, entry);
    assert_eq!(rows[1].entry.target, "aws", "the target column round-trips");
    // A row exported before cloud targets existed (no `target`) reads as a Looker call.
    let mut old = serde_json::to_value(&rows[0]).unwrap();
    old.as_object_mut().unwrap().remove("target");
    let old: gatehouse_domain::ports::LedgerRow = serde_json::from_value(old).unwrap();
    assert_eq!(old.entry.target, "looker");
    db.close().await;
    // Even with direct SQL, rows cannot be changed or removed.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("gatehouse.db").display()))
        .await
        .unwrap();
    let upd = sqlx::query("UPDATE ledger SET status = 'forged'")
        .execute(&pool)
        .await;
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = sqlx::query("DELETE FROM ledger").execute(&pool).await;
    assert!(del.unwrap_err().to_string().contains("append-only"));
}

/// Rows written before the hash chain existed are chained, in order, when the database is opened
/// with the chain's migration; new rows continue that chain.
#[tokio::test]
async fn ledger_rows_from_before_the_chain_are_chained_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("gatehouse.db").display());
    // The schema as it was before migration 0006: migrations 0001..=0004 only.
    let old = tempfile::tempdir().unwrap();
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for f in std::fs::read_dir(&migrations).unwrap() {
        let f = f.unwrap().path();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "0005" {
            std::fs::copy(&f, old.path().join(&name)).unwrap();
        }
    }
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(old.path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    for n in 1..=3 {
        sqlx::query(
            "INSERT INTO ledger (at, envelope_id, subject, event, rule, call, status)
             VALUES (?, ?, 's', 'user_deactivated', 'offboarding.disable', ?, 'ok')",
        )
        .bind(format!("2025-01-01T00:00:0{n}.000Z"))
        .bind(format!("old-{n}"))
        .bind(r#"{"method":"PATCH","path":"/users/1","body":{"is_disabled":true}}"#)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let db = Sqlite::open(dir.path()).await.unwrap();
    let ok = gatehouse_domain::ledger_chain::verify_store(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ok.rows, 3);
    let rows = db.ledger_since(None).await.unwrap();
    assert_eq!(rows[0].prev_hash, gatehouse_domain::ledger_chain::GENESIS);
    assert_eq!(rows[2].entry.envelope_id, "old-3");
    let entry = LedgerEntry {
        at: DateTime::from_timestamp_millis(gatehouse_domain::clock::now().timestamp_millis()).unwrap(),
        envelope_id: "new".into(),
        subject: "s".into(),
        event: "t".into(),
        rule: "r".into(),
        call: HttpCall {
            method: Method::Delete,
            path: "/users/1/sessions/2".into(),
            body: None,
        },
        status: "ok".into(),
        target: "looker".into(),
        policy_digest: None,
        actor: Some("reconcile".into()),
    };
    db.append_ledger(&[entry]).await.unwrap();
    let rows = db.ledger_since(None).await.unwrap();
    assert_eq!(rows[3].seq, 4);
    assert_eq!(rows[3].prev_hash, rows[2].hash);
    assert_eq!(
        gatehouse_domain::ledger_chain::verify_store(&db)
            .await
            .unwrap()
            .unwrap()
            .rows,
        4
    );
    db.close().await;
    // Opening again changes nothing (the chained rows are final).
    let db = Sqlite::open(dir.path()).await.unwrap();
    assert_eq!(db.ledger_since(None).await.unwrap(), rows);
}

/// Issue 13: the claim's cost must not grow with the backlog. Its plan walks `queue_visible` in
/// order (no sort of every visible row into a temporary b-tree, no full scan) and checks each
/// candidate with index lookups, so a claim reads about one batch of rows however many wait.
#[tokio::test]
async fn claim_walks_the_indexes_and_sorts_nothing() {
    let (_d, db) = open().await;
    let backlog: Vec<Envelope> = (0..2_000)
        .map(|i| env(&format!("e{i}"), &format!("s{}", i % 500), i))
        .collect();
    db.publish(&backlog).await.unwrap();
    let plan = db.claim_query_plan().await.unwrap();
    let text = plan.join("\n");
    assert!(
        plan.iter()
            .any(|l| l.starts_with("SEARCH q USING") && l.contains("INDEX queue_visible")),
        "the candidates come from queue_visible in order:\n{text}"
    );
    assert!(
        plan.iter().any(|l| l.contains("INDEX queue_subject ")),
        "the older-sibling check is an index lookup:\n{text}"
    );
    assert!(
        plan.iter().any(|l| l.contains("INDEX queue_subject_claimed")),
        "the in-flight-sibling check is an index lookup:\n{text}"
    );
    assert!(
        !plan
            .iter()
            .any(|l| l.contains("TEMP B-TREE") || l.starts_with("SCAN")),
        "no sort of the visible rows and no full scan:\n{text}"
    );
}

/// The batch claim still hands out each subject's oldest message only, one at a time, when a
/// person has a backlog of their own and an older event arrives after a newer one was claimed.
#[tokio::test]
async fn claim_keeps_per_subject_order_with_a_backlog() {
    let (_d, db) = open().await;
    let mut batch: Vec<Envelope> = (0..5).map(|i| env(&format!("hot{i}"), "hot", 100 + i)).collect();
    batch.push(env("cold", "cold", 500));
    db.publish(&batch).await.unwrap();
    let first = db.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(ids(&first), vec!["hot0", "cold"]);
    // Older than everything, but its subject has a message in flight: it waits.
    db.publish(&[env("older", "hot", 1)]).await.unwrap();
    assert!(db.receive(10, Duration::from_secs(60)).await.unwrap().is_empty());
    db.ack(&first[0]).await.unwrap();
    assert_eq!(
        ids(&db.receive(10, Duration::from_secs(60)).await.unwrap()),
        vec!["older"]
    );
}

/// Waits (up to a minute, the writes being spawned tasks) until `n` writes wait for the turn.
async fn writes_queue_up(db: &Sqlite, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while db.writes_waiting() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writes never queued up: {} of {n}",
            db.writes_waiting()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 13: requests that arrive while an enqueue commits are written together by the next
/// one, in a single transaction (one WAL fsync), and each returns only once that commit is done.
#[tokio::test]
async fn concurrent_enqueues_share_one_group_commit() {
    let (dir, db) = open().await;
    let before = db.writer_commits();
    let turn = db.hold_write_turn().await;
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move { db.publish(&[env(&format!("g{i}"), &format!("s{i}"), i)]).await })
        })
        .collect();
    writes_queue_up(&db, 20).await;
    drop(turn);
    for r in requests {
        r.await.unwrap().unwrap();
    }
    let after = db.writer_commits();
    assert_eq!(
        after.commits - before.commits,
        1,
        "one transaction for the 20 requests"
    );
    assert_eq!(after.enqueued - before.enqueued, 20);
    assert_eq!(after.writes - before.writes, 20);
    // Acknowledged means written: another connection to the file sees every message.
    let reopened = Sqlite::open(dir.path()).await.unwrap();
    assert_eq!(reopened.queue_depth().await.unwrap(), 20);
}

fn ledger_entry(envelope: &str) -> LedgerEntry {
    LedgerEntry {
        at: DateTime::from_timestamp_millis(gatehouse_domain::clock::now().timestamp_millis()).unwrap(),
        envelope_id: envelope.into(),
        subject: "s".into(),
        event: "t".into(),
        rule: "r".into(),
        target: "looker".into(),
        call: HttpCall {
            method: Method::Patch,
            path: "/users/1".into(),
            body: None,
        },
        status: "ok".into(),
        policy_digest: None,
        actor: None,
    }
}

/// Issue 13: the processor's writes (claim, forgotten fingerprint, ledger appends, outcome
/// commits, acks) join the same group commit as the enqueues: one transaction, one fsync for
/// all. A write that fails in the group (an outcome losing its compare-and-set) rolls back
/// alone, with its own error, while the others commit; the ledger appends of one group form one
/// chain.
#[tokio::test]
async fn a_group_commit_carries_every_kind_of_write_and_a_failing_one_rolls_back_alone() {
    let (dir, db) = open().await;
    db.publish(&[env("queued", "q", 1)]).await.unwrap();
    let claimed = db.receive(1, Duration::from_secs(60)).await.unwrap();
    db.commit(Outcome {
        envelope_id: EnvelopeId("first".into()),
        identity: Some(Identity::new("s1")),
        converged: Some("fp".into()),
        deletion: DeletionChange::Keep,
        base_version: None,
        offboarding: None,
    })
    .await
    .unwrap();
    let before = db.writer_commits();
    let turn = db.hold_write_turn().await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.append_ledger(&[ledger_entry(&format!("a{i}")), ledger_entry(&format!("b{i}"))])
                .await
                .map(|_| "ledger")
        }));
    }
    {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.publish(&[env("new", "n", 2)]).await.map(|_| "enqueue")
        }));
    }
    {
        let (db, d) = (db.clone(), claimed[0].clone());
        tasks.push(tokio::spawn(async move { db.ack(&d).await.map(|_| "ack") }));
    }
    // Stale: s1 is at version 1, this handler loaded it at version 0.
    let stale = {
        let db = db.clone();
        tokio::spawn(async move {
            db.commit(Outcome {
                envelope_id: EnvelopeId("stale".into()),
                identity: Some(Identity::new("s1")),
                converged: Some("other".into()),
                deletion: DeletionChange::Keep,
                base_version: Some(0),
                offboarding: None,
            })
            .await
        })
    };
    let forgot = {
        let db = db.clone();
        tokio::spawn(async move { db.forget_converged("s1", 1).await })
    };
    writes_queue_up(&db, 7).await;
    drop(turn);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let err = stale.await.unwrap().unwrap_err();
    assert!(
        err.is_subject_changed(),
        "the stale commit lost its compare-and-set: {err}"
    );
    assert_eq!(forgot.await.unwrap().unwrap(), 2, "the fingerprint was forgotten");
    let after = db.writer_commits();
    assert_eq!(
        after.commits - before.commits,
        1,
        "one transaction for the seven writes"
    );
    assert_eq!(after.writes - before.writes, 7);
    // The stale commit's `processed` row was rolled back with it; the rest is on disk.
    assert!(!db.is_processed(&EnvelopeId("stale".into())).await.unwrap());
    let reopened = Sqlite::open(dir.path()).await.unwrap();
    let s = reopened.load_subject("s1").await.unwrap().unwrap();
    assert_eq!((s.version, s.converged), (2, None));
    assert_eq!(
        reopened.queue_depth().await.unwrap(),
        1,
        "acked one, enqueued one"
    );
    let rows = reopened.ledger_since(None).await.unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(
        gatehouse_domain::ledger_chain::verify_store(&reopened)
            .await
            .unwrap()
            .unwrap()
            .rows,
        6,
        "the three appends of the group form one chain"
    );
    for pair in rows.chunks(2) {
        let (a, b) = (&pair[0].entry.envelope_id, &pair[1].entry.envelope_id);
        assert_eq!(a[1..], b[1..], "an append's rows stay together: {a} {b}");
    }
}

/// Issue 13: a write outside the group commit (here a release, on the sqlx connection) takes the
/// same write turn as the group's thread: while a group holds the turn it waits in this process,
/// not in SQLite's busy handler, and it is done once the turn comes.
#[tokio::test]
async fn a_write_outside_the_group_waits_for_the_write_turn() {
    let (_d, db) = open().await;
    db.publish(&[env("e1", "s", 1)]).await.unwrap();
    let claimed = db.receive(1, Duration::from_secs(60)).await.unwrap();
    let turn = db.hold_write_turn().await;
    let release = {
        let (db, d) = (db.clone(), claimed[0].clone());
        tokio::spawn(async move { db.release(&d, Duration::ZERO).await })
    };
    // Long enough for a release that did not wait for the turn to have committed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !release.is_finished(),
        "the release ran while a group held the turn"
    );
    drop(turn);
    release.await.unwrap().unwrap();
    assert_eq!(
        ids(&db.receive(1, Duration::from_secs(60)).await.unwrap()),
        vec!["e1"],
        "released: visible again"
    );
}

/// Issue 13: closing the store stops its writer thread; a write after that fails with a clear
/// error instead of hanging, and what was committed before is on disk.
#[tokio::test]
async fn a_write_after_close_fails_and_earlier_writes_are_on_disk() {
    let (dir, db) = open().await;
    db.publish(&[env("before", "s", 1)]).await.unwrap();
    db.close().await;
    let e = db.publish(&[env("after", "s", 2)]).await.unwrap_err();
    let chain: Vec<String> = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect();
    assert!(
        chain.iter().any(|m| m.contains("the sqlite writer is closed")),
        "{chain:?}"
    );
    let reopened = Sqlite::open(dir.path()).await.unwrap();
    assert_eq!(reopened.queue_depth().await.unwrap(), 1);
}

/// Issue 13: the outcome's commit finishes the event: its message leaves the embedded queue in
/// the same transaction, so the worker's ack that follows writes nothing (no second group wait),
/// and a commit refused by its compare-and-set leaves the message queued for the next try.
#[tokio::test]
async fn the_outcome_commit_removes_its_message_and_the_ack_writes_nothing() {
    let (dir, db) = open().await;
    db.publish(&[env("done", "a", 1), env("refused", "b", 2)])
        .await
        .unwrap();
    let claimed = db.receive(2, Duration::from_secs(60)).await.unwrap();
    assert_eq!(ids(&claimed), vec!["done", "refused"]);
    db.commit(identity_outcome("done", "a", None)).await.unwrap();
    // Committed: on disk without the message, before any ack.
    let other = Sqlite::open(dir.path()).await.unwrap();
    assert_eq!(other.queue_depth().await.unwrap(), 1);
    let before = db.writer_commits();
    db.ack(&claimed[0]).await.unwrap();
    assert_eq!(db.writer_commits(), before, "the ack had nothing left to write");

    // Subject b is at version 1; a handler that loaded version 0 loses the compare-and-set.
    db.commit(identity_outcome("other", "b", None)).await.unwrap();
    let refused = db
        .commit(identity_outcome("refused", "b", Some(0)))
        .await
        .unwrap_err();
    assert!(refused.is_subject_changed(), "{refused:?}");
    assert_eq!(other.queue_depth().await.unwrap(), 1, "still queued");
    assert!(!db.is_processed(&EnvelopeId("refused".into())).await.unwrap());
    // Its ack, if a worker sent one anyway, is a real write.
    db.ack(&claimed[1]).await.unwrap();
    assert_eq!(db.writer_commits().commits, before.commits + 3);
    assert_eq!(other.queue_depth().await.unwrap(), 0);
}
