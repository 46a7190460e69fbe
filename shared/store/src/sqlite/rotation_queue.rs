//! The embedded rotation queue (issue 12, item 4): a second named queue in the same database,
//! carrying rotation requests as envelopes from the processor to the rotator, so that the two
//! meet through a queue and never through a shared table. The same at-least-once contract as
//! the events queue: `publish` returns once the rows are committed (WAL, `synchronous=FULL`);
//! a delivery neither acked nor released comes back after its visibility; poison is moved to
//! `dead_letters` with its reason (`gatehouse dlq redrive` puts it on the events queue, where
//! the processor publishes a valid request here again). No per-subject ordering: a request
//! stands alone.

use super::{QueueTable, Sqlite, dead_letter_from, delivery, err, now_ms, parse_receipt, set_visible};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::{BackendError, Delivery, QueueConsumer, QueueProducer};
use sqlx::Row;
use std::time::Duration;

/// The rotation queue of a [`Sqlite`] database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RotationQueue {
    db: Sqlite,
}

impl Sqlite {
    /// The embedded rotation queue in this database (`rotation_queue`).
    pub fn rotation_queue(&self) -> RotationQueue {
        RotationQueue { db: self.clone() }
    }
}

impl RotationQueue {
    /// Messages waiting or in flight.
    pub async fn depth(&self) -> Result<i64, BackendError> {
        sqlx::query("SELECT COUNT(*) FROM rotation_queue")
            .fetch_one(&self.db.pool)
            .await
            .map(|r| r.get::<i64, _>(0))
            .map_err(err("cannot count the rotation queue"))
    }

    /// Enqueue a raw body as-is (tests of poison handling).
    pub async fn enqueue_raw(&self, id: &str, body: &str) -> Result<(), BackendError> {
        insert(&*self.db.writer().await, id, body).await
    }
}

async fn insert<'e>(writer: impl sqlx::SqliteExecutor<'e>, id: &str, body: &str) -> Result<(), BackendError> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO rotation_queue (envelope_id, body, visible_at, enqueued_at)
         VALUES (?, ?, ?, ?) ON CONFLICT (envelope_id) DO NOTHING",
    )
    .bind(id)
    .bind(body)
    .bind(now)
    .bind(now)
    .execute(writer)
    .await
    .map_err(err("cannot publish to the rotation queue"))?;
    Ok(())
}

impl QueueProducer for RotationQueue {
    /// Every envelope in one transaction: all are stored, or none.
    async fn publish(&self, batch: &[Envelope]) -> Result<(), BackendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let writer = self.db.writer().await;
        let mut tx = writer
            .begin()
            .await
            .map_err(err("cannot begin publishing to the rotation queue"))?;
        for env in batch {
            insert(&mut *tx, &env.id.0, &env.to_json()).await?;
        }
        tx.commit()
            .await
            .map_err(err("cannot commit publishing to the rotation queue"))
    }
}

impl QueueConsumer for RotationQueue {
    /// Claims up to `max` visible messages, oldest first, until `now + visibility`.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
        let now = now_ms();
        let until = now + visibility.as_millis() as i64;
        let mut rows = sqlx::query(
            "UPDATE rotation_queue SET attempts = attempts + 1, visible_at = ?1
             WHERE seq IN (SELECT seq FROM rotation_queue WHERE visible_at <= ?2
                           ORDER BY visible_at, seq LIMIT ?3)
             RETURNING seq, attempts, body",
        )
        .bind(until)
        .bind(now)
        .bind(max as i64)
        .fetch_all(&*self.db.writer().await)
        .await
        .map_err(err("cannot receive from the rotation queue"))?
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1), r.get::<String, _>(2)))
        .collect::<Vec<_>>();
        rows.sort_by_key(|r| r.0);
        Ok(rows
            .into_iter()
            .map(|(seq, attempts, body)| delivery(seq, attempts, body))
            .collect())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError> {
        let (seq, _) = parse_receipt(&delivery.receipt)?;
        sqlx::query("DELETE FROM rotation_queue WHERE seq = ?")
            .bind(seq)
            .execute(&*self.db.writer().await)
            .await
            .map_err(err("cannot ack on the rotation queue"))?;
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), BackendError> {
        let why = "cannot release on the rotation queue";
        set_visible(
            &*self.db.writer().await,
            QueueTable::Rotation,
            delivery,
            delay,
            why,
        )
        .await
    }

    async fn extend(&self, delivery: &Delivery, visibility: Duration) -> Result<(), BackendError> {
        let why = "cannot extend on the rotation queue";
        set_visible(
            &*self.db.writer().await,
            QueueTable::Rotation,
            delivery,
            visibility,
            why,
        )
        .await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BackendError> {
        dead_letter_from(&*self.db.writer().await, QueueTable::Rotation, delivery, reason).await
    }
}
