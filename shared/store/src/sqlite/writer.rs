//! The embedded database's writer thread (issue 13): one OS thread owns the one connection the
//! group commit writes on, and runs a whole group there, statement after statement, without
//! leaving the thread.
//!
//! Before, the group ran on a sqlx connection, and every statement (each enqueue, claim,
//! savepoint, outcome row, ack, `BEGIN`, `COMMIT`) was a round trip from the async task to
//! sqlx's connection thread and back: a channel send and a futex wake-up each way, about five
//! per event. On two busy cores the profile spent a third of its samples in the scheduler, and
//! the writer, the one serial resource, was idle between statements. Now a group is one round
//! trip: the ops go to this thread, which runs `BEGIN IMMEDIATE`, every statement (prepared
//! once and cached), the savepoints and `COMMIT`, and sends the results back.
//!
//! Same file, same pragmas as the pool (`journal_mode=WAL` is the file's, `synchronous=FULL`
//! and the busy timeout are this connection's), same SQL as before, so durability and the
//! ledger chain are unchanged: a result is sent only after `COMMIT` returned, that is after the
//! WAL was fsync'd.

use super::group::{Claimed, Done, Op, Row};
use super::{err, now_ms, ts};
use crate::group_commit::GroupResult;
use gatehouse_domain::ledger_chain;
use gatehouse_domain::ports::{BackendError, DeletionChange, LedgerEntry, OffboardingTimes, Outcome};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// One group for the thread: its ops and where the results go.
type Request = (Vec<Op>, oneshot::Sender<GroupResult<Done>>);

/// The sending side of the writer thread. Dropping the last one ends the thread once it has
/// finished the group in hand (the connection closes there).
#[derive(Debug)]
pub(super) struct WriterThread {
    requests: std::sync::Mutex<Option<mpsc::Sender<Request>>>,
    closed: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

/// The busy timeout: another process (a `gatehouse-ingress` beside a `gatehouse-processor` on one
/// file) holding the write lock is waited for this long.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl WriterThread {
    /// Open the writer connection on `path` (migrations already applied) and start its thread.
    pub(super) fn start(path: &Path) -> Result<Self, BackendError> {
        let conn = Connection::open(path).map_err(err("cannot open the sqlite writer"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(err("cannot set the sqlite busy timeout"))?;
        // `temp_store = MEMORY` keeps each write's savepoint journal in memory: on a file (the
        // default) a group of more than a few writes spilled it to a new temporary file under
        // /var/tmp, created, written and unlinked about once per commit (2,054 in one run of
        // the throughput bench's dry side; none since). It holds the pages a savepoint changed,
        // for one commit: a few hundred KiB at most.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA temp_store = MEMORY;",
        )
        .map_err(err("cannot set the sqlite writer's pragmas"))?;
        // A 2xx means on disk only if this connection fsyncs the WAL at every commit: read the
        // settings back rather than trust that the pragmas took.
        let (journal, synchronous): (String, i64) = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .and_then(|j| Ok((j, conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?)))
            .map_err(err("cannot read the sqlite writer's pragmas"))?;
        if !journal.eq_ignore_ascii_case("wal") || synchronous != 2 {
            return Err(BackendError::new(
                "cannot open the sqlite writer",
                format!("journal_mode={journal} synchronous={synchronous}, wanted wal and 2 (FULL)"),
            ));
        }
        conn.set_prepared_statement_cache_capacity(32);
        let (tx, rx) = mpsc::channel::<Request>();
        let (closed_tx, closed_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("gatehouse-sqlite-writer".into())
            .spawn(move || {
                let mut conn = conn;
                while let Ok((ops, reply)) = rx.recv() {
                    let result = run_group(&mut conn, &ops);
                    // A caller gone (runtime shutting down) no longer needs the answer.
                    let _ = reply.send(result);
                }
                drop(conn);
                let _ = closed_tx.send(());
            })
            .map_err(err("cannot start the sqlite writer thread"))?;
        Ok(WriterThread {
            requests: std::sync::Mutex::new(Some(tx)),
            closed: tokio::sync::Mutex::new(Some(closed_rx)),
        })
    }

    /// Run `ops` as one transaction on the writer thread.
    pub(super) async fn run(&self, ops: Vec<Op>) -> GroupResult<Done> {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|s| s.send((ops, reply)).is_ok());
        if sent != Some(true) {
            return Err(BackendError::new("cannot write", "the sqlite writer is closed"));
        }
        answer.await.unwrap_or_else(|_| {
            Err(BackendError::new(
                "cannot write",
                "the sqlite writer thread stopped",
            ))
        })
    }

    /// Stop taking groups, let the thread finish the one in hand and close its connection.
    pub(super) async fn close(&self) {
        drop(
            self.requests
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        if let Some(closed) = self.closed.lock().await.take() {
            let _ = closed.await;
        }
    }
}

/// Every op in one transaction; the per-op results once committed.
///
/// Every enqueue and every ack first (an ack's outcome committed in an earlier group, since the
/// worker awaits the one before it sends the other, so running acks first changes nothing but
/// lets this group's claims see the freed subjects and the new messages); then the other writes
/// in order, a write of several statements in a savepoint of its own (one statement is atomic by
/// itself: SQLite undoes a failing statement). A failure of the transaction itself (`BEGIN`,
/// `COMMIT`, a savepoint that cannot be released) rolls everything back and fails every op.
fn run_group(conn: &mut Connection, ops: &[Op]) -> GroupResult<Done> {
    control(conn, "BEGIN IMMEDIATE").map_err(err("cannot begin a write"))?;
    match run_ops(conn, ops) {
        Ok(results) => match control(conn, "COMMIT") {
            Ok(()) => Ok(results),
            Err(failed) => {
                rollback(conn);
                Err(BackendError::new("cannot commit a write", failed))
            }
        },
        Err(failed) => {
            rollback(conn);
            Err(failed)
        }
    }
}

/// A transaction or savepoint statement, prepared once per connection (`execute_batch` parsed it
/// again each time: four parses per event at group commit rates).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(failed) = conn.execute_batch("ROLLBACK")
    {
        tracing::error!(error = %failed, "cannot roll back a failed group commit");
    }
}

fn run_ops(conn: &Connection, ops: &[Op]) -> Result<Vec<Result<Done, BackendError>>, BackendError> {
    let mut results: Vec<Option<Result<Done, BackendError>>> = ops.iter().map(|_| None).collect();
    let now = now_ms();
    for (op, slot) in ops.iter().zip(results.iter_mut()) {
        match op {
            // Several rows are several statements: a savepoint keeps the enqueue whole.
            Op::Enqueue(rows) if rows.len() > 1 => {
                *slot = Some(in_savepoint(conn, |c| insert_messages(c, rows, now))?.map(|()| Done::Unit));
            }
            Op::Enqueue(rows) => *slot = Some(insert_messages(conn, rows, now).map(|()| Done::Unit)),
            Op::Ack { seq } => *slot = Some(delete_message(conn, *seq).map(|()| Done::Unit)),
            _ => {}
        }
    }
    for (op, slot) in ops.iter().zip(results.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        *slot = Some(match op {
            Op::Claim { until, now, max } => claim(conn, *until, *now, *max).map(Done::Claimed),
            Op::ForgetConverged { key, base_version } => {
                forget_converged(conn, key, *base_version).map(Done::Version)
            }
            Op::Commit(outcome) => in_savepoint(conn, |c| commit_outcome(c, outcome))?.map(Done::Finished),
            Op::AppendLedger(entries) => {
                in_savepoint(conn, |c| append_ledger(c, entries))?.map(|()| Done::Unit)
            }
            // A refused SCIM write (a taken userName, a stale version) is an answer for its
            // client, not a failure of the group.
            Op::Scim(rows) => Ok(Done::Scim(in_savepoint(conn, |c| {
                super::scim::write_rows(c, rows)
            })?)),
            Op::Enqueue(_) | Op::Ack { .. } => unreachable!("run above"),
        });
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(BackendError::new("cannot write", "not run"))))
        .collect())
}

/// `f` inside a savepoint: its failure rolls back its own statements alone and is its result;
/// a savepoint that cannot be opened or released fails the whole group (the outer `Err`).
fn in_savepoint<T, E>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<Result<T, E>, BackendError> {
    control(conn, "SAVEPOINT op").map_err(err("cannot open a savepoint"))?;
    match f(conn) {
        Ok(done) => {
            control(conn, "RELEASE op").map_err(err("cannot release a savepoint"))?;
            Ok(Ok(done))
        }
        Err(failed) => {
            conn.execute_batch("ROLLBACK TO op; RELEASE op")
                .map_err(err("cannot roll back a savepoint"))?;
            Ok(Err(failed))
        }
    }
}

/// A message already queued (same envelope id) is left as it is.
fn insert_messages(conn: &Connection, rows: &[Row], now: i64) -> Result<(), BackendError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO queue (envelope_id, subject, occurred_at, body, visible_at, enqueued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (envelope_id) DO NOTHING",
        )
        .map_err(err("cannot enqueue"))?;
    for r in rows {
        stmt.execute(params![r.id, r.subject, r.occurred_at, r.body, now])
            .map_err(err("cannot enqueue"))?;
    }
    Ok(())
}

fn delete_message(conn: &Connection, seq: i64) -> Result<(), BackendError> {
    conn.prepare_cached("DELETE FROM queue WHERE seq = ?1")
        .and_then(|mut s| s.execute([seq]))
        .map_err(err("cannot ack"))?;
    Ok(())
}

fn claim(conn: &Connection, until: i64, now: i64, max: i64) -> Result<Vec<Claimed>, BackendError> {
    let mut stmt = conn
        .prepare_cached(super::claim::CLAIM)
        .map_err(err("cannot receive from the embedded queue"))?;
    let rows = stmt
        .query_map(params![until, now, max], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(err("cannot receive from the embedded queue"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(err("cannot receive from the embedded queue"))
}

/// Forget `key`'s converged fingerprint if its version is still `base_version`; the new version.
fn forget_converged(conn: &Connection, key: &str, base_version: i64) -> Result<i64, BackendError> {
    conn.prepare_cached(
        "UPDATE subjects SET converged = NULL, updated_at = ?3, version = ?2 + 1
         WHERE key = ?1 AND version = ?2 RETURNING version",
    )
    .and_then(|mut s| {
        s.query_row(
            params![key, base_version, ts(gatehouse_domain::clock::now())],
            |r| r.get::<_, i64>(0),
        )
        .optional()
    })
    .map_err(err("cannot forget the converged fingerprint"))?
    .ok_or_else(|| BackendError::subject_changed(key))
}

/// An event's outcome, the one transaction that finishes an event: processed, offboarding times,
/// the identity (compare-and-set on the version the handler loaded: a conflict fails this op,
/// its savepoint undoes the `processed` row too, and the event is handled again from a fresh
/// load), the scheduled deletion, and the envelope's message leaving the embedded queue (the
/// ack, in the same commit as the effects it acknowledges). Returns that message's `seq`, if it
/// was queued here (with SQS or Pub/Sub in front, it never is).
fn commit_outcome(conn: &Connection, outcome: &Outcome) -> Result<Option<i64>, BackendError> {
    let now = ts(gatehouse_domain::clock::now());
    conn.prepare_cached(
        "INSERT INTO processed (envelope_id, processed_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![outcome.envelope_id.0, now]))
    .map_err(err("cannot record the processed envelope"))?;
    if let Some(times) = &outcome.offboarding {
        record_offboarding(conn, times)?;
    }
    let finished = conn
        .prepare_cached("DELETE FROM queue WHERE envelope_id = ?1 RETURNING seq")
        .and_then(|mut s| {
            s.query_row([&outcome.envelope_id.0], |r| r.get::<_, i64>(0))
                .optional()
        })
        .map_err(err("cannot remove the finished message from the queue"))?;
    let Some(identity) = &outcome.identity else {
        return Ok(finished);
    };
    let json = serde_json::to_string(identity).map_err(err("cannot serialize the identity"))?;
    let written = match outcome.base_version {
        None => conn
            .prepare_cached(
                "INSERT INTO subjects (key, identity, converged, updated_at, version) VALUES (?1, ?2, ?3, ?4, 1)
                 ON CONFLICT (key) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![identity.key, json, outcome.converged, now])),
        Some(v) => conn
            .prepare_cached(
                "UPDATE subjects SET identity = ?2, converged = ?3, updated_at = ?4, version = ?5 + 1
                 WHERE key = ?1 AND version = ?5",
            )
            .and_then(|mut s| s.execute(params![identity.key, json, outcome.converged, now, v])),
    }
    .map_err(err("cannot write the identity"))?;
    if written != 1 {
        return Err(BackendError::subject_changed(&identity.key));
    }
    match &outcome.deletion {
        DeletionChange::Keep => {}
        DeletionChange::Schedule(d) => {
            conn.prepare_cached(
                "INSERT INTO deletions (subject, email, due_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (subject) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![d.subject, d.email, ts(d.due_at)]))
            .map_err(err("cannot schedule the deletion"))?;
        }
        DeletionChange::Cancel => {
            conn.prepare_cached("DELETE FROM deletions WHERE subject = ?1")
                .and_then(|mut s| s.execute([&identity.key]))
                .map_err(err("cannot cancel the deletion"))?;
        }
    }
    Ok(finished)
}

/// Offboarding times (issue 15), in the commit's savepoint: a redelivered envelope keeps its
/// first row.
fn record_offboarding(conn: &Connection, t: &OffboardingTimes) -> Result<(), BackendError> {
    conn.prepare_cached(
        "INSERT INTO offboarding_times
             (envelope_id, person, email, source, event, occurred_at, received_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (envelope_id) DO NOTHING",
    )
    .and_then(|mut s| {
        s.execute(params![
            t.envelope_id,
            t.person,
            t.email,
            t.source,
            t.event,
            ts(t.occurred_at),
            ts(t.received_at),
            ts(t.finished_at)
        ])
    })
    .map_err(err("cannot record the offboarding times"))?;
    Ok(())
}

/// Append `entries` to the ledger chain. The group's `BEGIN IMMEDIATE` holds the file's write
/// lock, so the head read here is the head, and appends form one line.
fn append_ledger(conn: &Connection, entries: &[LedgerEntry]) -> Result<(), BackendError> {
    let head = conn
        .prepare_cached("SELECT seq, hash FROM ledger_head WHERE id = 1")
        .and_then(|mut s| {
            s.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
                .optional()
        })
        .map_err(err("cannot read the ledger chain head"))?;
    let (mut seq, mut prev) = head.unwrap_or_else(|| (0, ledger_chain::GENESIS.to_string()));
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO ledger (seq, at, envelope_id, subject, event, rule, call, status, prev_hash, hash, target,
                                 policy_digest, actor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .map_err(err("cannot append to the ledger"))?;
    for entry in entries {
        seq += 1;
        let hash = ledger_chain::row_hash(seq, entry, &prev);
        let call = serde_json::to_string(&entry.call).map_err(err("cannot serialize call"))?;
        insert
            .execute(params![
                seq,
                ts(entry.at),
                entry.envelope_id,
                entry.subject,
                entry.event,
                entry.rule,
                call,
                entry.status,
                prev,
                hash,
                entry.target,
                entry.policy_digest,
                entry.actor
            ])
            .map_err(err("cannot append to the ledger"))?;
        prev = hash;
    }
    conn.prepare_cached(
        "INSERT INTO ledger_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = ?1, hash = ?2",
    )
    .and_then(|mut s| s.execute(params![seq, prev]))
    .map_err(err("cannot move the ledger chain head"))?;
    Ok(())
}
