//! Group commit of the state's hot writes on PostgreSQL (issue 13), as `sqlite/group.rs` does
//! on the embedded store.
//!
//! An event's outcome commit and each ledger append used to be a transaction of its own: a
//! `BEGIN`, the statements and a `COMMIT`, each a round trip, and every append held the ledger
//! head's row lock, the one lock all replicas share, for its whole transaction. Now a write
//! adds itself to this process's list and waits for its turn; whoever gets the turn runs every
//! waiting write in ONE transaction (the turn-taking is `group_commit::Turns`, shared with the
//! SQLite store): the head locked once (first, before any other row), then the outcomes in
//! subject order, so every replica takes its locks in one order and two groups cannot deadlock;
//! each write in a savepoint of its own when there are several (a write that fails, such as an outcome losing its compare-and-set, rolls back
//! alone and reports its own error), the head moved once, one `COMMIT`.
//!
//! What a caller sees is unchanged: `Ok` only once the transaction holding its write has
//! committed; the chain stays one line (the appends of a group run in order under the head's
//! lock, each starting from the head the previous one left; a failed append leaves the head
//! where it was); the processed row, identity and deletion of an outcome commit or roll back
//! together.

use super::{Postgres, commit_on, millis};
use crate::group_commit::{GroupResult, Turns};
use crate::sqlite::err;
use gatehouse_domain::ledger_chain;
use gatehouse_domain::ports::{BackendError, LedgerEntry, Outcome};
use sqlx::{PgConnection, Row};
use std::sync::atomic::{AtomicU64, Ordering};

/// A write the group runs.
pub(super) enum Op {
    /// Record an event's outcome.
    Commit(Box<Outcome>),
    /// Append rows to the ledger chain.
    AppendLedger(Vec<LedgerEntry>),
}

/// The waiting writes and the turn to run them.
#[derive(Default, Debug)]
pub(super) struct Group {
    turns: Turns<Op, ()>,
    commits: AtomicU64,
    writes: AtomicU64,
}

/// Transactions the group committed in this process, and the writes they carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommits {
    pub commits: u64,
    pub writes: u64,
}

/// The chain head as the group's transaction moves it.
#[derive(Clone, PartialEq)]
struct Head {
    seq: i64,
    hash: String,
}

impl Postgres {
    /// Run `op` in the next group commit; returns once that transaction has committed.
    pub(super) async fn write(&self, op: Op) -> Result<(), BackendError> {
        let db = self.clone();
        self.group
            .turns
            .submit(op, move |ops| async move {
                let results = db.run_ops(&ops).await?;
                db.group.commits.fetch_add(1, Ordering::Relaxed);
                db.group.writes.fetch_add(ops.len() as u64, Ordering::Relaxed);
                Ok(results)
            })
            .await
    }

    /// Every op in one transaction; the per-op results once committed, or why nothing was.
    async fn run_ops(&self, ops: &[Op]) -> GroupResult<()> {
        let mut tx = self.pool.begin().await.map_err(err("cannot begin a write"))?;
        let appends = ops
            .iter()
            .any(|op| matches!(op, Op::AppendLedger(entries) if !entries.is_empty()));
        // The head's row lock first: every replica locks the head before any subject row, so
        // two groups cannot each hold what the other waits for.
        let start = if appends {
            let row = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .map_err(err("cannot lock the ledger chain head"))?;
            Some(Head {
                seq: row.get(0),
                hash: row.get(1),
            })
        } else {
            None
        };
        let mut head = start.clone();
        let now = millis(gatehouse_domain::clock::now());
        // One write alone needs no savepoint: its failure rolls back the transaction.
        let alone = ops.len() == 1;
        // The appends first, then the outcomes by subject and envelope: two replicas' groups
        // lock rows in one order (head, then subjects, then processed rows by key), so they
        // wait for each other instead of deadlocking when they touch the same people.
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by(|&x, &y| lock_order(&ops[x]).cmp(&lock_order(&ops[y])));
        let mut results: Vec<Option<Result<(), BackendError>>> = ops.iter().map(|_| None).collect();
        for i in order {
            let op = &ops[i];
            if !alone {
                control(&mut tx, "SAVEPOINT op").await?;
            }
            let before = head.clone();
            let r = match op {
                Op::Commit(outcome) => commit_on(&mut tx, outcome, now).await,
                Op::AppendLedger(entries) => match head.as_mut() {
                    Some(h) => append_on(&mut tx, entries, h).await,
                    None => Ok(()),
                },
            };
            if r.is_err() {
                head = before;
                if alone {
                    tx.rollback().await.map_err(err("cannot roll back a write"))?;
                    return Ok(vec![r]);
                }
                control(&mut tx, "ROLLBACK TO SAVEPOINT op").await?;
            }
            if !alone {
                control(&mut tx, "RELEASE SAVEPOINT op").await?;
            }
            results[i] = Some(r);
        }
        if let Some(h) = head.filter(|h| Some(h) != start.as_ref()) {
            sqlx::query("UPDATE ledger_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(h.seq)
                .bind(&h.hash)
                .execute(&mut *tx)
                .await
                .map_err(err("cannot move the ledger chain head"))?;
        }
        tx.commit().await.map_err(err("cannot commit a write"))?;
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(BackendError::new("cannot write", "not run"))))
            .collect())
    }

    /// Transactions the group committed in this process so far (tests, the bench).
    pub fn group_commits(&self) -> GroupCommits {
        GroupCommits {
            commits: self.group.commits.load(Ordering::Relaxed),
            writes: self.group.writes.load(Ordering::Relaxed),
        }
    }

    /// Hold the write turn (tests: let writes gather, then release them into one commit).
    #[doc(hidden)]
    pub async fn hold_write_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.group.turns.hold().await
    }

    /// Writes waiting for a turn (tests).
    #[doc(hidden)]
    pub fn writes_waiting(&self) -> usize {
        self.group.turns.waiting()
    }
}

/// Where a write runs in its group: appends (the head is locked before anything else), then
/// outcomes by subject, then by envelope.
fn lock_order(op: &Op) -> (u8, &str, &str) {
    match op {
        Op::AppendLedger(_) => (0, "", ""),
        Op::Commit(o) => (
            1,
            o.identity.as_ref().map_or("", |i| i.key.as_str()),
            o.envelope_id.0.as_str(),
        ),
    }
}

async fn control(conn: &mut PgConnection, sql: &'static str) -> Result<(), BackendError> {
    sqlx::query(sql)
        .execute(conn)
        .await
        .map(drop)
        .map_err(err("cannot run a savepoint"))
}

/// Append `entries` after `head` (locked by the caller's transaction), moving `head` along.
async fn append_on(
    conn: &mut PgConnection,
    entries: &[LedgerEntry],
    head: &mut Head,
) -> Result<(), BackendError> {
    for e in entries {
        let seq = head.seq + 1;
        let mut e = e.clone();
        e.at = millis(e.at);
        let hash = ledger_chain::row_hash(seq, &e, &head.hash);
        let call =
            serde_json::to_string(&e.call).map_err(|e| BackendError::new("cannot serialize call", e))?;
        sqlx::query(
            "INSERT INTO ledger (seq, at, envelope_id, subject, event, rule, call, status, prev_hash, hash, target,
                                 policy_digest, actor)
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13)",
        )
        .bind(seq)
        .bind(e.at)
        .bind(&e.envelope_id)
        .bind(&e.subject)
        .bind(&e.event)
        .bind(&e.rule)
        .bind(call)
        .bind(&e.status)
        .bind(&head.hash)
        .bind(&hash)
        .bind(&e.target)
        .bind(&e.policy_digest)
        .bind(&e.actor)
        .execute(&mut *conn)
        .await
        .map_err(err("cannot append to the ledger"))?;
        *head = Head { seq, hash };
    }
    Ok(())
}
