//! The mass-change breaker's state in SQLite (`BEGIN IMMEDIATE`: one decision at a time).

use super::{Sqlite, err, parse_ts, ts};
use gatehouse_domain::breaker::{
    ALL_SOURCES, AdmitLimits, Change, ChangeKind, HeldChange, Settle, Trip, Verdict,
};
use gatehouse_domain::ports::BackendError;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

fn kind(s: &str) -> Result<ChangeKind, BackendError> {
    ChangeKind::parse(s).ok_or_else(|| BackendError::new("unknown breaker change kind", s.to_string()))
}

fn trip(r: &SqliteRow) -> Result<Trip, BackendError> {
    Ok(Trip {
        kind: kind(&r.get::<String, _>(0))?,
        scope: r.get(1),
        at: parse_ts(&r.get::<String, _>(2))?,
        count: r.get::<i64, _>(3) as u64,
        limit: r.get::<i64, _>(4) as u64,
    })
}

impl Sqlite {
    pub(super) async fn admit(&self, c: &Change, limits: &AdmitLimits) -> Result<Verdict, BackendError> {
        let writer = self.writer().await;
        let mut tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("cannot begin a breaker decision"))?;
        let held = sqlx::query("SELECT 1 FROM breaker_held WHERE envelope_id = ?")
            .bind(&c.envelope_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err("cannot read held changes"))?;
        if held.is_some() {
            return Ok(Verdict::AlreadyHeld);
        }
        let counted = sqlx::query("SELECT 1 FROM breaker_changes WHERE envelope_id = ? AND kind = ?")
            .bind(&c.envelope_id)
            .bind(c.kind.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(err("cannot read counted changes"))?;
        let tripped = sqlx::query("SELECT 1 FROM breaker_trips WHERE kind = ? AND scope IN (?, ?)")
            .bind(c.kind.as_str())
            .bind(ALL_SOURCES)
            .bind(&c.source)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err("cannot read breaker trips"))?
            .is_some();
        let mut new_trip = None;
        if !tripped && counted.is_none() {
            sqlx::query("DELETE FROM breaker_changes WHERE kind = ? AND at < ?")
                .bind(c.kind.as_str())
                .bind(ts(limits.since))
                .execute(&mut *tx)
                .await
                .map_err(err("cannot prune counted changes"))?;
            let count = |source: Option<&str>| {
                sqlx::query(
                    "SELECT COUNT(*) FROM breaker_changes WHERE kind = ? AND at >= ? AND (? IS NULL OR source = ?)",
                )
                .bind(c.kind.as_str())
                .bind(ts(limits.since))
                .bind(source)
                .bind(source)
            };
            let all: i64 = count(None)
                .fetch_one(&mut *tx)
                .await
                .map_err(err("cannot count changes"))?
                .get(0);
            let mine: i64 = count(Some(&c.source))
                .fetch_one(&mut *tx)
                .await
                .map_err(err("cannot count changes"))?
                .get(0);
            let known: i64 = sqlx::query("SELECT COUNT(*) FROM subjects")
                .fetch_one(&mut *tx)
                .await
                .map_err(err("cannot count known people"))?
                .get(0);
            let (all, mine) = (all as u64 + 1, mine as u64 + 1);
            new_trip = match (limits.overall(known as u64), limits.max_per_source) {
                (Some(lim), _) if all > lim => Some((ALL_SOURCES.to_string(), all, lim)),
                (_, Some(lim)) if mine > lim => Some((c.source.clone(), mine, lim)),
                _ => None,
            };
            if let Some((scope, count, lim)) = &new_trip {
                sqlx::query("INSERT INTO breaker_trips (kind, scope, at, count, lim) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
                    .bind(c.kind.as_str())
                    .bind(scope)
                    .bind(ts(c.at))
                    .bind(*count as i64)
                    .bind(*lim as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(err("cannot record a breaker trip"))?;
            } else {
                sqlx::query(
                    "INSERT INTO breaker_changes (envelope_id, kind, source, at) VALUES (?, ?, ?, ?)",
                )
                .bind(&c.envelope_id)
                .bind(c.kind.as_str())
                .bind(&c.source)
                .bind(ts(c.at))
                .execute(&mut *tx)
                .await
                .map_err(err("cannot count a change"))?;
            }
        }
        let verdict = if tripped || new_trip.is_some() {
            sqlx::query(
                "INSERT INTO breaker_held (envelope_id, kind, source, subject, held_at, envelope) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&c.envelope_id)
            .bind(c.kind.as_str())
            .bind(&c.source)
            .bind(&c.subject)
            .bind(ts(c.at))
            .bind(&c.envelope)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot hold a change"))?;
            Verdict::Held {
                tripped: new_trip.map(|(scope, count, limit)| Trip {
                    kind: c.kind,
                    scope,
                    at: c.at,
                    count,
                    limit,
                }),
            }
        } else {
            Verdict::Admitted
        };
        tx.commit()
            .await
            .map_err(err("cannot commit a breaker decision"))?;
        Ok(verdict)
    }

    pub(super) async fn trips(&self) -> Result<Vec<Trip>, BackendError> {
        sqlx::query("SELECT kind, scope, at, count, lim FROM breaker_trips ORDER BY at, kind, scope")
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot read breaker trips"))?
            .iter()
            .map(trip)
            .collect()
    }

    pub(super) async fn held(&self, source: Option<&str>) -> Result<Vec<HeldChange>, BackendError> {
        sqlx::query(
            "SELECT seq, kind, source, envelope_id, subject, held_at, envelope FROM breaker_held
             WHERE state = 'held' AND (? IS NULL OR source = ?) ORDER BY seq",
        )
        .bind(source)
        .bind(source)
        .fetch_all(&self.pool)
        .await
        .map_err(err("cannot read held changes"))?
        .iter()
        .map(|r| {
            Ok(HeldChange {
                seq: r.get(0),
                kind: kind(&r.get::<String, _>(1))?,
                source: r.get(2),
                envelope_id: r.get(3),
                subject: r.get(4),
                held_at: parse_ts(&r.get::<String, _>(5))?,
                envelope: r.get(6),
            })
        })
        .collect()
    }

    pub(super) async fn settle(&self, seq: i64, decision: Settle, actor: &str) -> Result<(), BackendError> {
        sqlx::query(
            "UPDATE breaker_held SET state = ?, decided_at = ?, decided_by = ? WHERE seq = ? AND state = 'held'",
        )
        .bind(decision.as_str())
        .bind(ts(gatehouse_domain::clock::now()))
        .bind(actor)
        .bind(seq)
        .execute(&*self.writer().await)
        .await
        .map_err(err("cannot record a decision on a held change"))?;
        Ok(())
    }

    pub(super) async fn reset(&self, source: Option<&str>) -> Result<Vec<Trip>, BackendError> {
        let writer = self.writer().await;
        let mut tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("cannot begin a breaker reset"))?;
        let closed = sqlx::query(
            "DELETE FROM breaker_trips WHERE ? IS NULL OR scope = ? RETURNING kind, scope, at, count, lim",
        )
        .bind(source)
        .bind(source)
        .fetch_all(&mut *tx)
        .await
        .map_err(err("cannot close breaker trips"))?
        .iter()
        .map(trip)
        .collect::<Result<Vec<_>, _>>()?;
        sqlx::query("DELETE FROM breaker_changes WHERE ? IS NULL OR source = ?")
            .bind(source)
            .bind(source)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot reset counted changes"))?;
        tx.commit().await.map_err(err("cannot commit a breaker reset"))?;
        Ok(closed)
    }
}
