//! What is specific to the PostgreSQL state store (the shared contract is in
//! `state_contract.rs`): several replicas on one database, and the URL's password kept secret.

use crate::state_contract::{entry, identity_outcome, postgres};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::ledger_chain;
use gatehouse_domain::ports::StateStore;
use gatehouse_store::postgres::Postgres;
use secrecy::SecretString;

/// Replicas start together (each migrates: sqlx serializes that with an advisory lock) and append
/// through their own pools: one linear chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrate_together_and_append_one_chain() {
    let url = SecretString::from(gatehouse_testkit::postgres::fresh_database().await);
    let replicas = futures::future::join_all((0..3).map(|_| Postgres::connect(&url, 3))).await;
    let replicas: Vec<Postgres> = replicas.into_iter().map(|r| r.expect("connect")).collect();
    let tasks: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let r = r.clone();
            tokio::spawn(async move {
                for n in 0..10 {
                    r.append_ledger(&[entry(i * 100 + n)]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let ok = ledger_chain::verify_store(&replicas[0]).await.unwrap().unwrap();
    assert_eq!(ok.rows, 30);
    assert_eq!(ok.head.unwrap().seq, 30);
}

/// Issue 13: the outcome commits and ledger appends waiting for a replica's turn share one
/// transaction; a commit losing its compare-and-set rolls back alone (its processed row too);
/// and the group's appends and another replica's, made while the group waited, are one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_carries_commits_and_appends_and_a_failing_one_rolls_back_alone() {
    let url = SecretString::from(gatehouse_testkit::postgres::fresh_database().await);
    let a = Postgres::connect(&url, 4).await.expect("connect");
    let b = Postgres::connect(&url, 4).await.expect("connect");
    a.commit(identity_outcome("e0", "k", None)).await.unwrap();
    let version = a.load_subject("k").await.unwrap().unwrap().version;
    let before = a.group_commits();
    let turn = a.hold_write_turn().await;
    let mut writes = Vec::new();
    for n in 0..5 {
        let a = a.clone();
        writes.push(tokio::spawn(async move { a.append_ledger(&[entry(n)]).await }));
    }
    for (id, key, base) in [
        ("e1", "k2", None),
        ("e2", "k", Some(version + 7)),
        ("e3", "k", Some(version)),
    ] {
        let a = a.clone();
        writes.push(tokio::spawn(async move {
            a.commit(identity_outcome(id, key, base)).await
        }));
    }
    while a.writes_waiting() < 8 {
        tokio::task::yield_now().await;
    }
    // Another replica appends while the group waits: the group starts from the head it left.
    b.append_ledger(&[entry(900)]).await.unwrap();
    drop(turn);
    let mut results = Vec::new();
    for w in writes {
        results.push(w.await.unwrap());
    }
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.is_ok(), i != 6, "write {i}: {r:?}");
    }
    let after = a.group_commits();
    assert_eq!(after.commits - before.commits, 1, "eight writes, one transaction");
    assert_eq!(after.writes - before.writes, 8);
    assert!(a.is_processed(&EnvelopeId("e1".into())).await.unwrap());
    assert!(a.is_processed(&EnvelopeId("e3".into())).await.unwrap());
    assert!(
        !a.is_processed(&EnvelopeId("e2".into())).await.unwrap(),
        "the refused commit's processed row rolled back with it"
    );
    assert_eq!(a.load_subject("k").await.unwrap().unwrap().version, version + 1);
    let ok = ledger_chain::verify_store(&a).await.unwrap().unwrap();
    assert_eq!(ok.rows, 6);
    assert_eq!(ok.head.unwrap().seq, 6);
}

/// A group updates several people in one transaction, so it locks their rows in one order
/// (by subject), whatever order its writes came in: a transaction elsewhere that locks the same
/// people in that order waits for the group instead of deadlocking with it. Here the group's
/// writes arrive as `k-b` then `k-a`; another connection holds `k-a`, then (once the group waits
/// for it) asks for `k-b`. Taken in arrival order, the group would hold `k-b` by then and
/// PostgreSQL would abort one of the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_locks_people_in_subject_order_whatever_order_its_writes_came_in() {
    use sqlx::Connection;
    let raw_url = gatehouse_testkit::postgres::fresh_database().await;
    let a = Postgres::connect(&SecretString::from(raw_url.clone()), 4)
        .await
        .expect("connect");
    a.commit(identity_outcome("a0", "k-a", None)).await.unwrap();
    a.commit(identity_outcome("b0", "k-b", None)).await.unwrap();
    let mut other = sqlx::PgConnection::connect(&raw_url).await.unwrap();
    let mut held = other.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM subjects WHERE key = 'k-a' FOR UPDATE")
        .execute(&mut *held)
        .await
        .unwrap();
    let turn = a.hold_write_turn().await;
    let mut writes = Vec::new();
    for (id, key) in [("b1", "k-b"), ("a1", "k-a")] {
        let version = a.load_subject(key).await.unwrap().unwrap().version;
        let writer = a.clone();
        writes.push(tokio::spawn(async move {
            writer.commit(identity_outcome(id, key, Some(version))).await
        }));
        while a.writes_waiting() < writes.len() {
            tokio::task::yield_now().await;
        }
    }
    drop(turn);
    // Wait until the group waits for the row `held` holds.
    let mut watch = sqlx::PgConnection::connect(&raw_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the group never waited for k-a"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sqlx::query("SELECT 1 FROM subjects WHERE key = 'k-b' FOR UPDATE")
        .execute(&mut *held)
        .await
        .expect("k-b is free: the group has not taken it before k-a");
    held.commit().await.unwrap();
    for w in writes {
        w.await.unwrap().expect("both outcomes commit once k-a is free");
    }
}

/// A wrong password or an unreachable server: the error says so without the password or URL.
#[tokio::test]
async fn connection_errors_never_contain_the_password() {
    let (_db, good) = postgres().await;
    let secret = "hunter2-d0-not-leak";
    let wrong = good
        .0
        .replacen("gatehouse:gatehouse@", &format!("gatehouse:{secret}@"), 1);
    assert!(wrong.contains(secret));
    let e = Postgres::connect(&SecretString::from(wrong), 1)
        .await
        .unwrap_err();
    let shown = format!("{e} {e:?} {:?}", std::error::Error::source(&e));
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("cannot connect to postgresql"), "{shown}");

    let bad = format!("postgres://gatehouse:{secret}@127.0.0.1:notaport/db");
    let e = Postgres::connect(&SecretString::from(bad), 1).await.unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(secret), "{shown}");
}
