//! The state-store contract: what the engine relies on from any `StateStore`, run against SQLite
//! and PostgreSQL (each test gets a fresh store: a temp directory, or a database with a random
//! name on the cluster of `scripts/postgres.sh`).
//!
//! Each function panics when the backend breaks the property it documents. The ledger tests
//! also act as an attacker with direct database access would ([`Tamper`]: triggers bypassed) and
//! check that `ledger_chain::verify_store` names the first bad row.

use chrono::{DateTime, Duration as ChronoDuration};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::identity::{Identity, Stamp, Stamped};
use gatehouse_domain::ledger_chain::{self, ChainBreak};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::ports::{
    DELETION_CLAIM, DeletionChange, LedgerEntry, LookerCallCounts, Outcome, ScheduledDeletion, StateStore,
};
use gatehouse_store::postgres::Postgres;
use gatehouse_store::sqlite::Sqlite;
use secrecy::SecretString;
use sqlx::Connection;
use std::collections::BTreeSet;
use std::future::Future;

/// Direct database access that bypasses the append-only triggers, as someone holding the file or
/// a superuser login could.
pub(crate) trait Tamper: Sync {
    /// Run `sql` (one or more statements) with the ledger's triggers out of the way.
    fn tamper(&self, sql: &str) -> impl Future<Output = ()> + Send;
    /// Run `sql` as an ordinary client would (triggers in force); the error text on failure.
    fn try_exec(&self, sql: &str) -> impl Future<Output = Result<(), String>> + Send;
}

/// The outcome of envelope `id`: subject `key`'s identity written, loaded at `base_version`.
pub(crate) fn identity_outcome(id: &str, key: &str, base_version: Option<i64>) -> Outcome {
    Outcome {
        envelope_id: EnvelopeId(id.into()),
        identity: Some(Identity::new(key)),
        converged: None,
        deletion: DeletionChange::Keep,
        base_version,
        offboarding: None,
    }
}

pub(crate) fn entry(n: usize) -> LedgerEntry {
    LedgerEntry {
        // Stores keep millisecond precision.
        at: DateTime::from_timestamp_millis(1_700_000_000_000 + n as i64 * 1000).unwrap(),
        envelope_id: format!("env-{n}"),
        subject: format!("okta:{}", n % 3),
        event: "user_deactivated".into(),
        rule: "offboarding.revoke_sessions".into(),
        call: HttpCall {
            method: Method::Delete,
            path: format!("/users/{n}/sessions/{n}"),
            body: n
                .is_multiple_of(2)
                .then(|| serde_json::json!({"is_disabled": true, "n": n})),
        },
        status: "ok".into(),
        target: if n.is_multiple_of(3) { "aws" } else { "looker" }.into(),
        // Every fourth row as written before the digest and actor were recorded (v1).
        policy_digest: (!n.is_multiple_of(4)).then(|| format!("{:064x}", n % 2)),
        actor: (!n.is_multiple_of(4)).then(|| format!("event:okta:{n}")),
    }
}

fn outcome(id: &str, subject: Option<&str>, converged: Option<&str>, deletion: DeletionChange) -> Outcome {
    Outcome {
        envelope_id: EnvelopeId(id.into()),
        identity: subject.map(Identity::new),
        converged: converged.map(str::to_string),
        deletion,
        base_version: None,
        offboarding: None,
    }
}

/// The same outcome from a handler that loaded the subject at `version`.
fn based_on(o: Outcome, version: i64) -> Outcome {
    Outcome {
        base_version: Some(version),
        ..o
    }
}

fn deletion(subject: &str, due_secs: i64) -> ScheduledDeletion {
    ScheduledDeletion {
        subject: subject.into(),
        email: format!("{subject}@example.com"),
        due_at: DateTime::from_timestamp(due_secs, 0).unwrap(),
    }
}

/// An envelope is unprocessed until its outcome is committed; committing again changes nothing.
/// An outcome without identity only marks the envelope processed.
pub(crate) async fn dedupe_follows_commit<S: StateStore>(s: S) {
    let id = EnvelopeId("e1".into());
    assert!(!s.is_processed(&id).await.unwrap());
    s.commit(outcome("e1", None, None, DeletionChange::Keep))
        .await
        .unwrap();
    assert!(s.is_processed(&id).await.unwrap());
    s.commit(outcome("e1", None, None, DeletionChange::Keep))
        .await
        .unwrap();
    assert!(s.is_processed(&id).await.unwrap());
    assert!(!s.is_processed(&EnvelopeId("e2".into())).await.unwrap());
    assert!(s.load_subject("okta:1").await.unwrap().is_none());
}

/// `commit` stores the identity and fingerprint (last commit wins), schedules a deletion once
/// (the first due date stays) and cancels it.
pub(crate) async fn commit_keeps_identity_fingerprint_and_deletions<S: StateStore>(s: S) {
    let mut identity = Identity::new("okta:1");
    identity.profile.insert(
        "email".into(),
        Stamped {
            value: "ada@example.com".into(),
            stamp: Stamp {
                at: DateTime::from_timestamp(50, 0).unwrap(),
                id: EnvelopeId("e1".into()),
            },
            source: Some(gatehouse_domain::envelope::Source::Okta),
        },
    );
    s.commit(Outcome {
        envelope_id: EnvelopeId("e1".into()),
        identity: Some(identity.clone()),
        converged: Some("fp1".into()),
        deletion: DeletionChange::Schedule(deletion("okta:1", 100)),
        base_version: None,
        offboarding: None,
    })
    .await
    .unwrap();
    let got = s.load_subject("okta:1").await.unwrap().expect("stored");
    assert_eq!(got.identity, identity);
    assert_eq!(got.converged.as_deref(), Some("fp1"));

    // A second schedule keeps the first due date; the fingerprint is replaced.
    s.commit(based_on(
        outcome(
            "e2",
            Some("okta:1"),
            Some("fp2"),
            DeletionChange::Schedule(deletion("okta:1", 500)),
        ),
        1,
    ))
    .await
    .unwrap();
    let got = s.load_subject("okta:1").await.unwrap().unwrap();
    assert_eq!(got.converged.as_deref(), Some("fp2"));
    assert_eq!(got.identity, Identity::new("okta:1"), "last commit wins");
    assert!(
        s.due_deletions(DateTime::from_timestamp(99, 0).unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    let due = s
        .due_deletions(DateTime::from_timestamp(100, 0).unwrap())
        .await
        .unwrap();
    assert_eq!(due, vec![deletion("okta:1", 100)]);

    s.commit(based_on(
        outcome("e3", Some("okta:1"), None, DeletionChange::Cancel),
        2,
    ))
    .await
    .unwrap();
    assert!(
        s.due_deletions(DateTime::from_timestamp(10_000, 0).unwrap())
            .await
            .unwrap()
            .is_empty(),
        "reactivation cancels the deletion"
    );
    assert_eq!(s.load_subject("okta:1").await.unwrap().unwrap().converged, None);
}

/// Optimistic concurrency: a commit from a load that another commit overtook is refused as
/// `subject_changed` and records nothing (not even the envelope as processed).
pub(crate) async fn a_commit_from_an_outdated_load_is_refused<S: StateStore>(s: S) {
    let o = |id: &str, fp: &str| outcome(id, Some("okta:1"), Some(fp), DeletionChange::Keep);
    s.commit(o("e1", "one")).await.unwrap();
    let e = s.commit(o("e2", "two")).await.unwrap_err();
    assert!(e.is_subject_changed(), "a second create loses: {e}");
    s.commit(based_on(o("e3", "three"), 1)).await.unwrap();
    let e = s.commit(based_on(o("e4", "four"), 1)).await.unwrap_err();
    assert!(
        e.is_subject_changed(),
        "a commit from version 1 after version 2: {e}"
    );
    for id in ["e2", "e4"] {
        assert!(!s.is_processed(&EnvelopeId(id.into())).await.unwrap(), "{id}");
    }
    let got = s.load_subject("okta:1").await.unwrap().unwrap();
    assert_eq!((got.version, got.converged.as_deref()), (2, Some("three")));
    s.commit(based_on(o("e4", "four"), 2)).await.unwrap();
    assert!(s.is_processed(&EnvelopeId("e4".into())).await.unwrap());
}

/// Before writing for a subject the engine forgets its converged fingerprint (issue 17): a
/// compare-and-set that moves the version, so the next load sees no fingerprint and a commit
/// from the load before it is refused; the identity and the processed rows stay as they were.
pub(crate) async fn forgetting_the_fingerprint_is_a_compare_and_set<S: StateStore>(s: S) {
    let o = |id: &str, fp: &str| outcome(id, Some("okta:1"), Some(fp), DeletionChange::Keep);
    s.commit(o("e1", "one")).await.unwrap();
    let loaded = s.load_subject("okta:1").await.unwrap().unwrap();
    assert_eq!((loaded.version, loaded.converged.as_deref()), (1, Some("one")));
    for (key, version) in [("okta:1", 0), ("okta:1", 2), ("okta:nobody", 1)] {
        let e = s.forget_converged(key, version).await.unwrap_err();
        assert!(e.is_subject_changed(), "{key} at {version}: {e}");
    }
    assert_eq!(s.forget_converged("okta:1", 1).await.unwrap(), 2);
    let got = s.load_subject("okta:1").await.unwrap().unwrap();
    assert_eq!((got.version, got.converged.as_deref()), (2, None));
    assert_eq!(got.identity, loaded.identity);
    assert!(s.is_processed(&EnvelopeId("e1".into())).await.unwrap());
    let e = s.commit(based_on(o("e2", "two"), 1)).await.unwrap_err();
    assert!(e.is_subject_changed(), "a commit from before the forget: {e}");
    assert!(!s.is_processed(&EnvelopeId("e2".into())).await.unwrap());
    s.commit(based_on(o("e2", "two"), 2)).await.unwrap();
    let got = s.load_subject("okta:1").await.unwrap().unwrap();
    assert_eq!((got.version, got.converged.as_deref()), (3, Some("two")));
}

/// A due deletion is handed to one caller; another gets it only after the claim lapses, and
/// never after it is finished. Concurrent sweepers split the due deletions between them.
pub(crate) async fn due_deletions_are_claimed<S: StateStore + Clone + 'static>(s: S) {
    for i in 0..20 {
        s.commit(outcome(
            &format!("e{i}"),
            Some(&format!("okta:{i}")),
            None,
            DeletionChange::Schedule(deletion(&format!("okta:{i}"), 100 + i)),
        ))
        .await
        .unwrap();
    }
    let now = DateTime::from_timestamp(1_000, 0).unwrap();
    let sweeps: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.due_deletions(now).await.unwrap() })
        })
        .collect();
    let mut handed = Vec::new();
    for sweep in sweeps {
        let got = sweep.await.unwrap();
        let order: Vec<_> = got.iter().map(|d| d.due_at).collect();
        assert!(order.windows(2).all(|w| w[0] <= w[1]), "oldest first");
        handed.extend(got.into_iter().map(|d| d.subject));
    }
    let unique: BTreeSet<_> = handed.iter().cloned().collect();
    assert_eq!(
        handed.len(),
        20,
        "each due deletion handed out exactly once: {handed:?}"
    );
    assert_eq!(unique.len(), 20);
    assert!(s.due_deletions(now).await.unwrap().is_empty(), "all claimed");

    s.finish_deletion("okta:0").await.unwrap();
    let lapsed = now + ChronoDuration::from_std(DELETION_CLAIM).unwrap() + ChronoDuration::seconds(1);
    let again = s.due_deletions(lapsed).await.unwrap();
    assert_eq!(again.len(), 19, "claims lapse; the finished one is gone");
    assert!(again.iter().all(|d| d.subject != "okta:0"));
}

/// Appended entries come back in order with consecutive seqs, filtered by time with `since`,
/// chained from the genesis hash, with the head on the last row.
pub(crate) async fn ledger_round_trips_and_chains<S: StateStore>(s: S) {
    assert!(s.ledger_since(None).await.unwrap().is_empty());
    assert_eq!(s.ledger_head().await.unwrap(), None);
    assert_eq!(ledger_chain::verify_store(&s).await.unwrap().unwrap().rows, 0);
    s.append_ledger(&[]).await.unwrap();
    let entries: Vec<LedgerEntry> = (1..=5).map(entry).collect();
    s.append_ledger(&entries[..2]).await.unwrap();
    s.append_ledger(&entries[2..]).await.unwrap();
    let rows = s.ledger_since(None).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(rows.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(), entries);
    assert_eq!(rows[0].prev_hash, ledger_chain::GENESIS);
    for w in rows.windows(2) {
        assert_eq!(w[1].prev_hash, w[0].hash);
    }
    let head = s.ledger_head().await.unwrap().expect("head after appends");
    assert_eq!((head.seq, head.hash.as_str()), (5, rows[4].hash.as_str()));
    let ok = ledger_chain::verify_store(&s).await.unwrap().unwrap();
    assert_eq!((ok.rows, ok.head), (5, Some(head)));

    let since = s.ledger_since(Some(entries[3].at)).await.unwrap();
    assert_eq!(since.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
}

/// Appends from many concurrent writers still form one linear chain.
pub(crate) async fn concurrent_appends_form_one_chain<S: StateStore + Clone + 'static>(s: S) {
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..8 {
                    let n = w * 100 + i;
                    s.append_ledger(&[entry(n), entry(n + 50)]).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let rows = s.ledger_since(None).await.unwrap();
    assert_eq!(rows.len(), 96);
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=96).collect::<Vec<i64>>()
    );
    let ok = ledger_chain::verify_store(&s).await.unwrap().unwrap();
    assert_eq!(ok.rows, 96);
}

/// An ordinary client cannot update or delete ledger rows.
pub(crate) async fn ledger_refuses_update_and_delete<S: StateStore, T: Tamper>(s: S, db: &T) {
    s.append_ledger(&[entry(1), entry(2)]).await.unwrap();
    for sql in [
        "UPDATE ledger SET status = 'forged' WHERE seq = 1",
        "DELETE FROM ledger WHERE seq = 2",
    ] {
        let e = db.try_exec(sql).await.expect_err(sql);
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    assert!(ledger_chain::verify_store(&s).await.unwrap().is_ok());
}

async fn chained<S: StateStore>(s: &S, n: usize) {
    let entries: Vec<LedgerEntry> = (1..=n).map(entry).collect();
    s.append_ledger(&entries).await.unwrap();
    assert!(ledger_chain::verify_store(s).await.unwrap().is_ok());
}

async fn broken<S: StateStore>(s: &S) -> ChainBreak {
    ledger_chain::verify_store(s)
        .await
        .unwrap()
        .expect_err("verify must fail on a tampered ledger")
}

/// Changing one field of a row, bypassing the triggers, is named by that row's seq.
pub(crate) async fn verify_names_an_altered_row<S: StateStore, T: Tamper>(s: S, db: &T) {
    chained(&s, 6).await;
    db.tamper("UPDATE ledger SET status = '404 already gone' WHERE seq = 3")
        .await;
    assert_eq!(broken(&s).await, ChainBreak::Altered { seq: 3 });
}

/// Issue 15: the policy digest and the actor are stored, read back and covered by the chain:
/// changing either (or clearing them, to pass a row off as written before they existed) is
/// named by the row's seq.
pub(crate) async fn verify_names_a_changed_digest_or_actor<S: StateStore, T: Tamper>(s: S, db: &T) {
    chained(&s, 6).await;
    let rows = s.ledger_since(None).await.unwrap();
    assert_eq!(rows[0].entry.actor.as_deref(), Some("event:okta:1"));
    assert_eq!(rows[0].entry.policy_digest, Some(format!("{:064x}", 1)));
    assert_eq!(
        (
            rows[3].entry.actor.as_deref(),
            rows[3].entry.policy_digest.as_deref()
        ),
        (None, None)
    );
    db.tamper("UPDATE ledger SET actor = 'operator:mallory' WHERE seq = 5")
        .await;
    assert_eq!(broken(&s).await, ChainBreak::Altered { seq: 5 });
    db.tamper("UPDATE ledger SET actor = 'event:okta:5' WHERE seq = 5")
        .await;
    assert!(ledger_chain::verify_store(&s).await.unwrap().is_ok());
    db.tamper(&format!(
        "UPDATE ledger SET policy_digest = '{}' WHERE seq = 2",
        "f".repeat(64)
    ))
    .await;
    assert_eq!(broken(&s).await, ChainBreak::Altered { seq: 2 });
    db.tamper("UPDATE ledger SET policy_digest = NULL, actor = NULL WHERE seq = 2")
        .await;
    assert_eq!(broken(&s).await, ChainBreak::Altered { seq: 2 });
}

/// Issue 15: the attack a head export defends against. Rewrite history (alter a row and
/// recompute every hash after it, and the head, as the database's owner can): plain `verify`
/// passes, `verify_against` the head exported before names the row.
pub(crate) async fn verify_against_an_exported_head_sees_a_rewritten_chain<S: StateStore, T: Tamper>(
    s: S,
    db: &T,
) {
    chained(&s, 6).await;
    let exported = s.ledger_head().await.unwrap().unwrap();
    let rows = s.ledger_since(None).await.unwrap();
    let head = s.ledger_head().await.unwrap();
    assert!(ledger_chain::verify_against(&rows, head.as_ref(), &exported).is_ok());
    s.append_ledger(&[entry(7)]).await.unwrap();
    let rows = s.ledger_since(None).await.unwrap();
    let head = s.ledger_head().await.unwrap();
    assert!(
        ledger_chain::verify_against(&rows, head.as_ref(), &exported).is_ok(),
        "rows appended after the export are fine"
    );
    // The rewrite.
    db.tamper("UPDATE ledger SET status = 'skipped' WHERE seq = 3")
        .await;
    let mut prev = rows[1].hash.clone();
    for r in &rows[2..] {
        let mut e = r.entry.clone();
        if r.seq == 3 {
            e.status = "skipped".into();
        }
        let hash = ledger_chain::row_hash(r.seq, &e, &prev);
        db.tamper(&format!(
            "UPDATE ledger SET prev_hash = '{prev}', hash = '{hash}' WHERE seq = {}",
            r.seq
        ))
        .await;
        prev = hash;
    }
    db.tamper(&format!("UPDATE ledger_head SET hash = '{prev}' WHERE id = 1"))
        .await;
    assert!(
        ledger_chain::verify_store(&s).await.unwrap().is_ok(),
        "the rewrite passes plain verify"
    );
    let rows = s.ledger_since(None).await.unwrap();
    let head = s.ledger_head().await.unwrap();
    let e = ledger_chain::verify_against(&rows, head.as_ref(), &exported).unwrap_err();
    assert!(
        matches!(&e, ledger_chain::AnchorBreak::HashMismatch { seq: 6, .. }),
        "{e}"
    );
}

/// Deleting a row in the middle is named by the row after the gap; deleting the last rows is
/// seen through the chain head.
pub(crate) async fn verify_names_a_removed_row<S: StateStore, T: Tamper>(s: S, db: &T) {
    chained(&s, 6).await;
    db.tamper("DELETE FROM ledger WHERE seq = 4").await;
    let e = broken(&s).await;
    assert_eq!(e, ChainBreak::Removed { seq: 5 });
    assert_eq!(e.seq(), 5);
    db.tamper("DELETE FROM ledger WHERE seq >= 5").await;
    assert_eq!(
        broken(&s).await,
        ChainBreak::Truncated {
            last_seq: 3,
            head_seq: 6
        }
    );
}

/// Swapping two rows' places is named by the first one moved.
pub(crate) async fn verify_names_reordered_rows<S: StateStore, T: Tamper>(s: S, db: &T) {
    chained(&s, 6).await;
    db.tamper(
        "UPDATE ledger SET seq = -1 WHERE seq = 2; UPDATE ledger SET seq = 2 WHERE seq = 3; \
         UPDATE ledger SET seq = 3 WHERE seq = -1;",
    )
    .await;
    assert_eq!(broken(&s).await, ChainBreak::Altered { seq: 2 });
}

/// Looker calls add up per month: `add` returns the month's new total, months are separate,
/// and a month nobody wrote reads 0.
pub(crate) async fn looker_calls_add_up_per_month<S: LookerCallCounts>(s: S) {
    assert_eq!(s.looker_calls("2026-01").await.unwrap(), 0);
    assert_eq!(s.add_looker_calls("2026-01", 5).await.unwrap(), 5);
    assert_eq!(s.add_looker_calls("2026-01", 7).await.unwrap(), 12);
    assert_eq!(s.add_looker_calls("2026-01", 0).await.unwrap(), 12);
    assert_eq!(
        s.add_looker_calls("2026-02", 1).await.unwrap(),
        1,
        "a new month starts at 0"
    );
    assert_eq!(s.looker_calls("2026-01").await.unwrap(), 12);
    assert_eq!(s.looker_calls("2026-02").await.unwrap(), 1);
    assert_eq!(s.looker_calls("2025-12").await.unwrap(), 0);
}

/// Issue 16: links are per target and person, idempotent, kept in first-linked order and never
/// dropped by a later link.
pub(crate) async fn account_links_are_durable_per_target_and_person<S: StateStore>(s: S) {
    assert!(s.account_links("looker", "00u1").await.unwrap().is_empty());
    s.link_accounts("looker", "00u1", &["101".into()]).await.unwrap();
    s.link_accounts("looker", "00u1", &["101".into(), "7".into()])
        .await
        .unwrap();
    s.link_accounts("looker", "00u1", &[]).await.unwrap();
    s.link_accounts("aws", "00u1", &["john.doe".into()])
        .await
        .unwrap();
    s.link_accounts("looker", "00u2", &["102".into()]).await.unwrap();
    assert_eq!(s.account_links("looker", "00u1").await.unwrap(), vec!["101", "7"]);
    assert_eq!(s.account_links("aws", "00u1").await.unwrap(), vec!["john.doe"]);
    assert_eq!(s.account_links("looker", "00u2").await.unwrap(), vec!["102"]);
    assert!(s.account_links("gcp", "00u1").await.unwrap().is_empty());
}

/// Two writers (two pools on one database: two replicas) adding at once lose nothing: the
/// upsert is `calls = calls + delta`, never a read-modify-write.
pub(crate) async fn concurrent_writers_sum_their_calls<S: LookerCallCounts + Clone + 'static>(a: S, b: S) {
    let tasks: Vec<_> = [a, b]
        .into_iter()
        .flat_map(|s| (0..20).map(move |i| (s.clone(), i)))
        .map(|(s, i)| tokio::spawn(async move { s.add_looker_calls("2026-03", 1 + i % 3).await.unwrap() }))
        .collect();
    let mut totals = Vec::new();
    for t in tasks {
        totals.push(t.await.unwrap());
    }
    let want: u64 = 2 * (0..20).map(|i| 1 + i % 3).sum::<u64>();
    assert_eq!(
        totals.iter().max().copied(),
        Some(want),
        "the last writer sees every call"
    );
    totals.sort_unstable();
    totals.dedup();
    assert_eq!(totals.len(), 40, "every add returned a distinct running total");
}

// ---- SQLite ----

pub(crate) struct SqliteFile(pub std::path::PathBuf);

impl SqliteFile {
    async fn pool(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&format!("sqlite://{}", self.0.join("gatehouse.db").display()))
            .await
            .unwrap()
    }
}

impl Tamper for SqliteFile {
    async fn tamper(&self, sql: &str) {
        let pool = self.pool().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TRIGGER IF EXISTS ledger_no_update; DROP TRIGGER IF EXISTS ledger_no_delete; {sql}"
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    async fn try_exec(&self, sql: &str) -> Result<(), String> {
        let pool = self.pool().await;
        let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        pool.close().await;
        r
    }
}

async fn sqlite() -> (tempfile::TempDir, Sqlite, SqliteFile) {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(dir.path()).await.unwrap();
    let file = SqliteFile(dir.path().to_path_buf());
    (dir, db, file)
}

// ---- PostgreSQL ----

pub(crate) struct PgDatabase(pub String);

impl Tamper for PgDatabase {
    async fn tamper(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.0).await.unwrap();
        // A superuser can switch user triggers off for its session.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET session_replication_role = replica; {sql}"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.ok();
    }

    async fn try_exec(&self, sql: &str) -> Result<(), String> {
        let mut conn = sqlx::PgConnection::connect(&self.0).await.unwrap();
        let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        conn.close().await.ok();
        r
    }
}

pub(crate) async fn postgres() -> (Postgres, PgDatabase) {
    let url = gatehouse_testkit::postgres::fresh_database().await;
    let db = Postgres::connect(&SecretString::from(url.clone()), 8)
        .await
        .expect("connect to the fresh database");
    (db, PgDatabase(url))
}

fn change(i: usize, source: &str) -> gatehouse_domain::breaker::Change {
    gatehouse_domain::breaker::Change {
        kind: gatehouse_domain::breaker::ChangeKind::Offboarding,
        source: source.into(),
        envelope_id: format!("{source}:e{i}"),
        subject: format!("{source}:s{i}"),
        at: gatehouse_domain::clock::now(),
        envelope: format!("{{\"n\":{i}}}"),
    }
}

/// The breaker counts every writer's changes as one: 30 admitted at once by two clones (two
/// replicas) with a limit of 10 → exactly 10 admitted, 20 held, one trip; a held envelope is
/// never admitted again; release (settle + reset) clears the trip and restarts the count.
pub(crate) async fn breaker_counts_as_one_and_holds_past_the_limit<S: StateStore + Clone + 'static>(s: S) {
    use gatehouse_domain::breaker::{AdmitLimits, Settle, Verdict};
    let limits = AdmitLimits {
        since: gatehouse_domain::clock::now() - ChronoDuration::hours(1),
        max: Some(10),
        max_percent: None,
        max_per_source: None,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (s, l) = (s.clone(), limits.clone());
        tasks.spawn(async move { s.breaker_admit(&change(i, "okta"), &l).await.unwrap() });
    }
    let mut verdicts = Vec::new();
    while let Some(v) = tasks.join_next().await {
        verdicts.push(v.unwrap());
    }
    let admitted = verdicts.iter().filter(|v| **v == Verdict::Admitted).count();
    let tripped = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Held { tripped: Some(_) }))
        .count();
    assert_eq!((admitted, tripped), (10, 1), "{verdicts:?}");
    let held = s.breaker_held(None).await.unwrap();
    assert_eq!(held.len(), 20);
    assert!(held.windows(2).all(|w| w[0].seq < w[1].seq));
    let trips = s.breaker_trips().await.unwrap();
    assert_eq!((trips.len(), trips[0].count, trips[0].limit), (1, 11, 10));
    // A redelivery of a held envelope is not decided again.
    let again = gatehouse_domain::breaker::Change {
        envelope_id: held[0].envelope_id.clone(),
        ..change(0, "okta")
    };
    assert_eq!(
        s.breaker_admit(&again, &limits).await.unwrap(),
        Verdict::AlreadyHeld
    );
    // Another source's filter sees none of them.
    assert!(s.breaker_held(Some("scim")).await.unwrap().is_empty());
    for h in &held {
        s.breaker_settle(h.seq, Settle::Discarded, "ops").await.unwrap();
    }
    assert_eq!(
        s.breaker_reset(Some("okta")).await.unwrap().len(),
        0,
        "the trip is overall"
    );
    assert_eq!(s.breaker_reset(None).await.unwrap().len(), 1);
    assert!(s.breaker_held(None).await.unwrap().is_empty());
    assert!(s.breaker_trips().await.unwrap().is_empty());
    // Counting starts afresh, and a discarded envelope stays decided.
    assert_eq!(
        s.breaker_admit(&change(100, "okta"), &limits).await.unwrap(),
        Verdict::Admitted
    );
    assert_eq!(
        s.breaker_admit(&again, &limits).await.unwrap(),
        Verdict::AlreadyHeld
    );
}

/// Access snapshots (issue 15): a run's rows come back whole for any time at or after it and
/// before the next run; retention keeps the newest `keep_runs` runs, and `keep_days` deletes
/// older runs but never the one just saved.
pub(crate) async fn access_snapshots_answer_as_of_and_are_bounded<
    S: gatehouse_domain::access::AccessSnapshots,
>(
    s: S,
) {
    use gatehouse_domain::access::{AccessRow, AccessSnapshot, Retention};
    let t = |h: i64| {
        chrono::DateTime::parse_from_rfc3339("2026-10-01T00:00:00Z")
            .unwrap()
            .to_utc()
            + chrono::Duration::hours(h)
    };
    let snap = |h: i64, groups: &[&str]| AccessSnapshot {
        run_at: t(h),
        rows: vec![
            AccessRow {
                subject: "00u2".into(),
                target: "looker".into(),
                state: serde_json::json!({"groups": groups}),
            },
            AccessRow {
                subject: "00u1".into(),
                target: "aws".into(),
                state: serde_json::json!({"user": "ann"}),
            },
            AccessRow {
                subject: "orphan:looker:77".into(),
                target: "looker".into(),
                state: serde_json::json!({"enabled": true}),
            },
        ],
    };
    let keep3 = Retention {
        keep_runs: 3,
        keep_days: None,
    };
    assert_eq!(s.access_snapshot_at(t(100)).await.unwrap(), None, "no run yet");
    s.save_access_snapshot(&snap(0, &["Finance"]), keep3)
        .await
        .unwrap();
    s.save_access_snapshot(&snap(24, &[]), keep3).await.unwrap();
    assert_eq!(
        s.access_snapshot_at(t(-1)).await.unwrap(),
        None,
        "nothing before the first run"
    );
    let first = s.access_snapshot_at(t(23)).await.unwrap().unwrap();
    assert_eq!(first.run_at, t(0));
    let mut want = snap(0, &["Finance"]);
    want.rows
        .sort_by(|a, b| (&a.subject, &a.target).cmp(&(&b.subject, &b.target)));
    assert_eq!(first, want, "the whole run, in subject order");
    assert_eq!(
        s.access_snapshot_at(t(24)).await.unwrap().unwrap().run_at,
        t(24),
        "at the run's time: that run"
    );
    // Many rows in one run (more than one insert statement).
    let big = AccessSnapshot {
        run_at: t(48),
        rows: (0..1200)
            .map(|i| AccessRow {
                subject: format!("p{i:04}"),
                target: "gcp".into(),
                state: serde_json::json!({"bindings": [i]}),
            })
            .collect(),
    };
    s.save_access_snapshot(&big, keep3).await.unwrap();
    assert_eq!(
        s.access_snapshot_at(t(50)).await.unwrap().unwrap().rows.len(),
        1200
    );
    s.save_access_snapshot(&snap(72, &[]), keep3).await.unwrap();
    assert_eq!(
        s.access_snapshot_runs().await.unwrap(),
        vec![t(72), t(48), t(24)],
        "the oldest run beyond 3 is gone"
    );
    assert_eq!(s.access_snapshot_at(t(10)).await.unwrap(), None);
    // By age: runs older than 1 day before the new one go, the new one stays even with keep_days 0.
    s.save_access_snapshot(
        &snap(96, &[]),
        Retention {
            keep_runs: 10,
            keep_days: Some(1),
        },
    )
    .await
    .unwrap();
    assert_eq!(s.access_snapshot_runs().await.unwrap(), vec![t(96), t(72)]);
    s.save_access_snapshot(
        &snap(200, &[]),
        Retention {
            keep_runs: 10,
            keep_days: Some(0),
        },
    )
    .await
    .unwrap();
    assert_eq!(s.access_snapshot_runs().await.unwrap(), vec![t(200)]);
}

/// Instantiate every contract test for both backends.
macro_rules! both {
    ($($name:ident => $body:expr;)*) => {
        mod sqlite_state {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_dir, s, db) = sqlite().await;
                    let f: &dyn Fn(Sqlite, &SqliteFile) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> = &$body;
                    f(s, &db).await;
                }
            )*
        }
        mod postgres_state {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (s, db) = postgres().await;
                    let f: &dyn Fn(Postgres, &PgDatabase) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> = &$body;
                    f(s, &db).await;
                }
            )*
        }
    };
}

both! {
    dedupe => |s, _| Box::pin(dedupe_follows_commit(s));
    commit => |s, _| Box::pin(commit_keeps_identity_fingerprint_and_deletions(s));
    stale_commit => |s, _| Box::pin(a_commit_from_an_outdated_load_is_refused(s));
    forget_converged => |s, _| Box::pin(forgetting_the_fingerprint_is_a_compare_and_set(s));
    deletion_claims => |s, _| Box::pin(due_deletions_are_claimed(s));
    ledger_chain => |s, _| Box::pin(ledger_round_trips_and_chains(s));
    concurrent_ledger_appends => |s, _| Box::pin(concurrent_appends_form_one_chain(s));
    ledger_append_only => |s, db| Box::pin(ledger_refuses_update_and_delete(s, db));
    verify_altered => |s, db| Box::pin(verify_names_an_altered_row(s, db));
    verify_removed => |s, db| Box::pin(verify_names_a_removed_row(s, db));
    verify_reordered => |s, db| Box::pin(verify_names_reordered_rows(s, db));
    verify_digest_actor => |s, db| Box::pin(verify_names_a_changed_digest_or_actor(s, db));
    verify_against_head => |s, db| Box::pin(verify_against_an_exported_head_sees_a_rewritten_chain(s, db));
    looker_calls_per_month => |s, _| Box::pin(looker_calls_add_up_per_month(s));
    account_links => |s, _| Box::pin(account_links_are_durable_per_target_and_person(s));
    breaker => |s, _| Box::pin(breaker_counts_as_one_and_holds_past_the_limit(s));
    okta_log_cursor => |s, _| Box::pin(okta_log_cursors_are_kept_per_org(s));
    offboarding_times => |s, _| Box::pin(offboarding_times_are_committed_with_their_envelope(s));
    access_snapshots => |s, _| Box::pin(access_snapshots_answer_as_of_and_are_bounded(s));
}

/// The count survives a restart (a reopen of the same file), and two processes opening the
/// same file add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_looker_calls_survive_a_reopen_and_two_writers_sum() {
    let (dir, s, _) = sqlite().await;
    assert_eq!(s.add_looker_calls("2026-01", 40).await.unwrap(), 40);
    s.close().await;
    let reopened = Sqlite::open(dir.path()).await.unwrap();
    assert_eq!(
        reopened.looker_calls("2026-01").await.unwrap(),
        40,
        "kept across a reopen"
    );
    let other = Sqlite::open(dir.path()).await.unwrap();
    concurrent_writers_sum_their_calls(reopened.clone(), other).await;
    assert_eq!(reopened.looker_calls("2026-01").await.unwrap(), 40);
}

/// Same on PostgreSQL: a new pool (a restarted replica) reads what the old one added, and two
/// pools add at once without losing a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_looker_calls_survive_a_reconnect_and_two_replicas_sum() {
    let (s, db) = postgres().await;
    assert_eq!(s.add_looker_calls("2026-01", 40).await.unwrap(), 40);
    s.close().await;
    let url = SecretString::from(db.0.clone());
    let reconnected = Postgres::connect(&url, 4).await.unwrap();
    assert_eq!(
        reconnected.looker_calls("2026-01").await.unwrap(),
        40,
        "kept across a reconnect"
    );
    let other = Postgres::connect(&url, 4).await.unwrap();
    concurrent_writers_sum_their_calls(reconnected.clone(), other).await;
    assert_eq!(reconnected.looker_calls("2026-01").await.unwrap(), 40);
}

/// The Okta System Log catch-up's cursor: absent at first, replaced by each save, per org.
pub(crate) async fn okta_log_cursors_are_kept_per_org<S: gatehouse_domain::okta_log::LogCursors>(s: S) {
    use gatehouse_domain::okta_log::LogCursor;
    assert_eq!(s.load_okta_cursor("acme").await.unwrap(), None);
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00.123Z")
        .unwrap()
        .to_utc();
    let first = LogCursor {
        next_url: Some("https://acme.okta.com/api/v1/logs?after=1".into()),
        filter: "eventType eq \"user.lifecycle.deactivate\"".into(),
        covered_until: at,
    };
    s.save_okta_cursor("acme", &first).await.unwrap();
    assert_eq!(s.load_okta_cursor("acme").await.unwrap(), Some(first.clone()));
    let second = LogCursor {
        next_url: None,
        covered_until: at + chrono::Duration::seconds(60),
        ..first.clone()
    };
    s.save_okta_cursor("acme", &second).await.unwrap();
    assert_eq!(s.load_okta_cursor("acme").await.unwrap(), Some(second));
    assert_eq!(s.load_okta_cursor("globex").await.unwrap(), None, "per org");
}

fn offboarding_times(
    id: &str,
    person: &str,
    occurred_secs: i64,
) -> gatehouse_domain::ports::OffboardingTimes {
    let at = |secs: i64| DateTime::from_timestamp_millis(secs * 1000 + 123).unwrap();
    gatehouse_domain::ports::OffboardingTimes {
        envelope_id: id.into(),
        person: person.into(),
        email: Some(format!("{person}@example.com")),
        source: "okta".into(),
        event: "user_deactivated".into(),
        occurred_at: at(occurred_secs),
        received_at: at(occurred_secs + 2),
        finished_at: at(occurred_secs + 9),
    }
}

/// Issue 15: an offboarding's times are written by the commit that finishes its envelope (also
/// one without an identity), once (a redelivery keeps the first), not at all when the commit is
/// refused (a lost race rolls them back with the processed row), and read back by event time in
/// `[since, until)`, oldest first, with millisecond precision.
pub(crate) async fn offboarding_times_are_committed_with_their_envelope<
    S: StateStore + gatehouse_domain::ports::OffboardingLog,
>(
    s: S,
) {
    let at = |secs: i64| DateTime::from_timestamp(secs, 0).unwrap();
    let b = offboarding_times("okta:o:b", "okta:2", 200);
    s.commit(Outcome {
        offboarding: Some(b.clone()),
        ..outcome("okta:o:b", Some("okta:2"), None, DeletionChange::Keep)
    })
    .await
    .unwrap();
    let a = offboarding_times("manual:offboard:a", "okta:1", 100);
    s.commit(Outcome {
        offboarding: Some(a.clone()),
        ..outcome("manual:offboard:a", None, None, DeletionChange::Keep)
    })
    .await
    .unwrap();
    // A redelivery's commit does not replace the first times.
    let mut again = b.clone();
    again.finished_at = at(999);
    s.commit(Outcome {
        offboarding: Some(again),
        ..outcome("okta:o:b", None, None, DeletionChange::Keep)
    })
    .await
    .unwrap();
    // A commit from an outdated load is refused: its times are not kept either.
    let refused = s
        .commit(Outcome {
            offboarding: Some(offboarding_times("okta:o:c", "okta:2", 150)),
            ..based_on(outcome("okta:o:c", Some("okta:2"), None, DeletionChange::Keep), 7)
        })
        .await;
    assert!(refused.unwrap_err().is_subject_changed());
    assert!(!s.is_processed(&EnvelopeId("okta:o:c".into())).await.unwrap());

    assert_eq!(
        s.offboardings(at(0), at(1000)).await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert_eq!(s.offboardings(at(101), at(1000)).await.unwrap(), vec![b.clone()]);
    assert_eq!(
        s.offboardings(at(0), at(200)).await.unwrap(),
        vec![a],
        "until is exclusive"
    );
    assert!(s.offboardings(at(201), at(1000)).await.unwrap().is_empty());
}
