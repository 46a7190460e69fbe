//! Microsoft Graph state on SQLite: the notification inbox (written before `/hooks/graph`
//! answers 202), the subscriptions Gatehouse keeps alive, and the last member listing seen per
//! group. Tables in `migrations/sqlite/0003_graph.sql`.

use crate::sqlite::{Sqlite, err, parse_ts, ts};
use chrono::{DateTime, Utc};
use gatehouse_domain::ports::BackendError;
use sqlx::Row;

/// One stored notification waiting to be acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxItem {
    pub seq: i64,
    pub key: String,
    /// The notification JSON as received.
    pub body: String,
    /// Attempts made so far (0 on the first).
    pub attempts: u32,
}

/// Rows of the inbox by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxCounts {
    pub pending: i64,
    pub done: i64,
    pub failed: i64,
}

impl InboxCounts {
    pub fn total(&self) -> i64 {
        self.pending + self.done + self.failed
    }
}

/// A subscription Gatehouse created (one per resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    pub resource: String,
    pub subscription_id: String,
    pub expires_at: DateTime<Utc>,
}

/// A group's member listing to store along with finishing a notification.
#[derive(Debug, Clone)]
pub struct GroupMembers<'a> {
    pub group_id: &'a str,
    pub group_name: &'a str,
    pub member_ids: &'a [String],
}

impl Sqlite {
    /// Store notifications `(key, json)` in one transaction. A key already present (a
    /// redelivery, whatever its state) is left as it is. Returns how many rows are new.
    pub async fn graph_inbox_put(
        &self,
        items: &[(String, String)],
        received_at: DateTime<Utc>,
    ) -> Result<u64, BackendError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(err("cannot begin the graph inbox write"))?;
        let mut added = 0;
        for (key, body) in items {
            let r = sqlx::query(
                "INSERT INTO graph_inbox (key, body, received_at, next_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(body)
            .bind(ts(received_at))
            .bind(received_at.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(err("cannot store a graph notification"))?;
            added += r.rows_affected();
        }
        tx.commit()
            .await
            .map_err(err("cannot commit the graph inbox write"))?;
        Ok(added)
    }

    /// Pending notifications due at `now`, oldest first.
    pub async fn graph_inbox_due(
        &self,
        now: DateTime<Utc>,
        max: usize,
    ) -> Result<Vec<InboxItem>, BackendError> {
        let rows = sqlx::query(
            "SELECT seq, key, body, attempts FROM graph_inbox
             WHERE status = 'pending' AND next_at <= ? ORDER BY seq LIMIT ?",
        )
        .bind(now.timestamp_millis())
        .bind(max as i64)
        .fetch_all(self.pool())
        .await
        .map_err(err("cannot read the graph inbox"))?;
        Ok(rows
            .iter()
            .map(|r| InboxItem {
                seq: r.get(0),
                key: r.get(1),
                body: r.get(2),
                attempts: r.get::<i64, _>(3) as u32,
            })
            .collect())
    }

    /// Mark a notification done; with `members`, replace the group's stored member listing in
    /// the same transaction.
    pub async fn graph_inbox_done(
        &self,
        seq: i64,
        members: Option<GroupMembers<'_>>,
    ) -> Result<(), BackendError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(err("cannot begin finishing a graph notification"))?;
        if let Some(m) = members {
            sqlx::query("DELETE FROM graph_group_members WHERE group_id = ?")
                .bind(m.group_id)
                .execute(&mut *tx)
                .await
                .map_err(err("cannot replace group members"))?;
            for user in m.member_ids {
                sqlx::query(
                    "INSERT INTO graph_group_members (group_id, user_id, group_name) VALUES (?, ?, ?)
                     ON CONFLICT (group_id, user_id) DO NOTHING",
                )
                .bind(m.group_id)
                .bind(user)
                .bind(m.group_name)
                .execute(&mut *tx)
                .await
                .map_err(err("cannot store group members"))?;
            }
        }
        sqlx::query("UPDATE graph_inbox SET status = 'done', done_at = ?, last_error = NULL WHERE seq = ?")
            .bind(gatehouse_domain::clock::now().timestamp_millis())
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot finish a graph notification"))?;
        tx.commit()
            .await
            .map_err(err("cannot commit finishing a graph notification"))
    }

    /// Count an attempt and try again at `next_at`.
    pub async fn graph_inbox_retry(
        &self,
        seq: i64,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), BackendError> {
        sqlx::query(
            "UPDATE graph_inbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE seq = ?",
        )
        .bind(next_at.timestamp_millis())
        .bind(error)
        .bind(seq)
        .execute(self.pool())
        .await
        .map_err(err("cannot reschedule a graph notification"))?;
        Ok(())
    }

    /// Give up on a notification; it stays in the table with the reason.
    pub async fn graph_inbox_fail(&self, seq: i64, error: &str) -> Result<(), BackendError> {
        sqlx::query(
            "UPDATE graph_inbox SET status = 'failed', attempts = attempts + 1, last_error = ?, done_at = ?
             WHERE seq = ?",
        )
        .bind(error)
        .bind(gatehouse_domain::clock::now().timestamp_millis())
        .bind(seq)
        .execute(self.pool())
        .await
        .map_err(err("cannot mark a graph notification failed"))?;
        Ok(())
    }

    /// Forget finished notifications older than `before` (redeliveries stop after 4 h).
    pub async fn graph_inbox_prune(&self, before: DateTime<Utc>) -> Result<u64, BackendError> {
        sqlx::query("DELETE FROM graph_inbox WHERE status != 'pending' AND done_at < ?")
            .bind(before.timestamp_millis())
            .execute(self.pool())
            .await
            .map(|r| r.rows_affected())
            .map_err(err("cannot prune the graph inbox"))
    }

    pub async fn graph_inbox_counts(&self) -> Result<InboxCounts, BackendError> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM graph_inbox GROUP BY status")
            .fetch_all(self.pool())
            .await
            .map_err(err("cannot count the graph inbox"))?;
        let mut c = InboxCounts::default();
        for r in rows {
            let n: i64 = r.get(1);
            match r.get::<&str, _>(0) {
                "pending" => c.pending = n,
                "done" => c.done = n,
                _ => c.failed += n,
            }
        }
        Ok(c)
    }

    /// The last error recorded for a notification, by key (for operators and tests).
    pub async fn graph_inbox_error(&self, key: &str) -> Result<Option<String>, BackendError> {
        sqlx::query("SELECT last_error FROM graph_inbox WHERE key = ?")
            .bind(key)
            .fetch_optional(self.pool())
            .await
            .map(|r| r.and_then(|r| r.get(0)))
            .map_err(err("cannot read the graph inbox"))
    }

    pub async fn graph_subscriptions(&self) -> Result<Vec<StoredSubscription>, BackendError> {
        let rows = sqlx::query(
            "SELECT resource, subscription_id, expires_at FROM graph_subscriptions ORDER BY resource",
        )
        .fetch_all(self.pool())
        .await
        .map_err(err("cannot list graph subscriptions"))?;
        rows.iter()
            .map(|r| {
                Ok(StoredSubscription {
                    resource: r.get(0),
                    subscription_id: r.get(1),
                    expires_at: parse_ts(r.get::<&str, _>(2))?,
                })
            })
            .collect()
    }

    /// Insert or replace the subscription of `sub.resource`.
    pub async fn graph_subscription_put(&self, sub: &StoredSubscription) -> Result<(), BackendError> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(err("cannot begin storing a graph subscription"))?;
        // A subscription id moves with its resource; drop a stale row holding the same id.
        sqlx::query("DELETE FROM graph_subscriptions WHERE subscription_id = ? AND resource != ?")
            .bind(&sub.subscription_id)
            .bind(&sub.resource)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot store a graph subscription"))?;
        sqlx::query(
            "INSERT INTO graph_subscriptions (resource, subscription_id, expires_at, updated_at)
             VALUES (?, ?, ?, ?)
             ON CONFLICT (resource) DO UPDATE SET subscription_id = excluded.subscription_id,
                expires_at = excluded.expires_at, updated_at = excluded.updated_at",
        )
        .bind(&sub.resource)
        .bind(&sub.subscription_id)
        .bind(ts(sub.expires_at))
        .bind(ts(gatehouse_domain::clock::now()))
        .execute(&mut *tx)
        .await
        .map_err(err("cannot store a graph subscription"))?;
        tx.commit()
            .await
            .map_err(err("cannot commit a graph subscription"))
    }

    pub async fn graph_subscription_by_id(
        &self,
        id: &str,
    ) -> Result<Option<StoredSubscription>, BackendError> {
        Ok(self
            .graph_subscriptions()
            .await?
            .into_iter()
            .find(|s| s.subscription_id == id))
    }

    /// Member ids of a group as last listed, with the group's name then.
    pub async fn graph_group_members(
        &self,
        group_id: &str,
    ) -> Result<(Vec<String>, Option<String>), BackendError> {
        let rows = sqlx::query(
            "SELECT user_id, group_name FROM graph_group_members WHERE group_id = ? ORDER BY user_id",
        )
        .bind(group_id)
        .fetch_all(self.pool())
        .await
        .map_err(err("cannot read group members"))?;
        let name = rows.first().map(|r| r.get::<String, _>(1));
        Ok((rows.iter().map(|r| r.get(0)).collect(), name))
    }
}
