//! SCIM directory and outbox on SQLite.
//!
//! Each User and Group is one row holding its JSON resource and a version (the ETag). A write
//! names the version it read, so two concurrent writers of one resource cannot lose an update: the
//! second one gets [`ScimStoreError::Stale`] and starts over from a fresh read. The directory
//! change and the envelopes it causes are committed in one transaction (transactional outbox); the
//! relay then publishes the outbox to the queue and deletes what it published.

use crate::sqlite::{Sqlite, err, parse_ts, ts};
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::BackendError;
use sqlx::Row;

/// The two resource types the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScimKind {
    User,
    Group,
}

impl ScimKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ScimKind::User => "User",
            ScimKind::Group => "Group",
        }
    }

    fn parse(s: &str) -> Result<Self, BackendError> {
        match s {
            "User" => Ok(ScimKind::User),
            "Group" => Ok(ScimKind::Group),
            other => Err(BackendError::new(
                "stored scim resource has an unknown kind",
                other.to_string(),
            )),
        }
    }
}

/// One stored resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimRecord {
    pub id: String,
    pub kind: ScimKind,
    /// The resource's attributes (no `meta`; the server adds it when answering).
    pub body: serde_json::Value,
    /// Starts at 1, +1 per write.
    pub version: i64,
    pub created: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
}

/// One change inside a [`ScimWrite`].
#[derive(Debug, Clone)]
pub enum ScimChange {
    Insert {
        id: String,
        kind: ScimKind,
        /// Users only: the userName (uniqueness is checked case-insensitively).
        user_name: Option<String>,
        body: serde_json::Value,
    },
    /// Applies only if the stored version is still `expected_version`.
    Update {
        id: String,
        expected_version: i64,
        user_name: Option<String>,
        body: serde_json::Value,
    },
    /// Applies only if the stored version is still `expected_version`.
    Delete { id: String, expected_version: i64 },
}

/// Directory changes plus the envelopes they cause: all or nothing.
#[derive(Debug, Clone)]
pub struct ScimWrite {
    /// Commit time (becomes `created`/`lastModified`).
    pub at: DateTime<Utc>,
    pub changes: Vec<ScimChange>,
    pub outbox: Vec<Envelope>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScimStoreError {
    /// Another User already has this userName (compared case-insensitively).
    #[error("userName is already taken")]
    Uniqueness,
    /// The resource changed (or vanished) since it was read.
    #[error("the resource changed since it was read")]
    Stale,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

fn user_name_key(user_name: &Option<String>) -> Option<String> {
    user_name.as_deref().map(uniqueness_key)
}

/// What `userName` uniqueness compares: NFKC, lower case, NFKC again (lower-casing can leave
/// text that is not NFKC). Look-alikes that are compatibility equivalents collide, so `Kate`
/// written with a Kelvin sign (U+212A) cannot squat `kate`, nor `ｋａｔｅ` (full width).
pub fn uniqueness_key(user_name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let lower = user_name.nfkc().collect::<String>().to_lowercase();
    lower.nfkc().collect()
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

fn record(r: &sqlx::sqlite::SqliteRow) -> Result<ScimRecord, BackendError> {
    Ok(ScimRecord {
        id: r.get(0),
        kind: ScimKind::parse(r.get::<&str, _>(1))?,
        body: serde_json::from_str(r.get::<&str, _>(2))
            .map_err(|e| BackendError::new("stored scim resource is not valid json", e))?,
        version: r.get(3),
        created: parse_ts(r.get::<&str, _>(4))?,
        last_modified: parse_ts(r.get::<&str, _>(5))?,
    })
}

impl Sqlite {
    /// One resource by id, of the given kind.
    pub async fn scim_get(&self, kind: ScimKind, id: &str) -> Result<Option<ScimRecord>, BackendError> {
        let row = sqlx::query(
            "SELECT id, kind, body, version, created, last_modified FROM scim_resources
             WHERE id = ? AND kind = ?",
        )
        .bind(id)
        .bind(kind.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(err("cannot read the scim directory"))?;
        row.as_ref().map(record).transpose()
    }

    /// Every resource of a kind, oldest first (a stable order for pagination).
    pub async fn scim_list(&self, kind: ScimKind) -> Result<Vec<ScimRecord>, BackendError> {
        let rows = sqlx::query(
            "SELECT id, kind, body, version, created, last_modified FROM scim_resources
             WHERE kind = ? ORDER BY seq",
        )
        .bind(kind.as_str())
        .fetch_all(self.pool())
        .await
        .map_err(err("cannot list the scim directory"))?;
        rows.iter().map(record).collect()
    }

    /// Commit directory changes and their outbox envelopes in one transaction.
    pub async fn scim_write(&self, write: &ScimWrite) -> Result<(), ScimStoreError> {
        let at = ts(write.at);
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(err("cannot begin a scim write"))?;
        for change in &write.changes {
            match change {
                ScimChange::Insert {
                    id,
                    kind,
                    user_name,
                    body,
                } => {
                    let r = sqlx::query(
                        "INSERT INTO scim_resources (id, kind, user_name_key, body, version, created, last_modified)
                         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
                    )
                    .bind(id)
                    .bind(kind.as_str())
                    .bind(user_name_key(user_name))
                    .bind(body.to_string())
                    .bind(&at)
                    .execute(&mut *tx)
                    .await;
                    match r {
                        Ok(_) => {}
                        Err(e) if is_unique_violation(&e) => return Err(ScimStoreError::Uniqueness),
                        Err(e) => return Err(err("cannot insert a scim resource")(e).into()),
                    }
                }
                ScimChange::Update {
                    id,
                    expected_version,
                    user_name,
                    body,
                } => {
                    let r = sqlx::query(
                        "UPDATE scim_resources SET body = ?1, user_name_key = ?2, version = version + 1,
                         last_modified = ?3 WHERE id = ?4 AND version = ?5",
                    )
                    .bind(body.to_string())
                    .bind(user_name_key(user_name))
                    .bind(&at)
                    .bind(id)
                    .bind(expected_version)
                    .execute(&mut *tx)
                    .await;
                    match r {
                        Ok(done) if done.rows_affected() == 1 => {}
                        Ok(_) => return Err(ScimStoreError::Stale),
                        Err(e) if is_unique_violation(&e) => return Err(ScimStoreError::Uniqueness),
                        Err(e) => return Err(err("cannot update a scim resource")(e).into()),
                    }
                }
                ScimChange::Delete { id, expected_version } => {
                    let done = sqlx::query("DELETE FROM scim_resources WHERE id = ? AND version = ?")
                        .bind(id)
                        .bind(expected_version)
                        .execute(&mut *tx)
                        .await
                        .map_err(err("cannot delete a scim resource"))?;
                    if done.rows_affected() != 1 {
                        return Err(ScimStoreError::Stale);
                    }
                }
            }
        }
        for env in &write.outbox {
            sqlx::query("INSERT INTO scim_outbox (envelope_id, body) VALUES (?, ?)")
                .bind(&env.id.0)
                .bind(env.to_json())
                .execute(&mut *tx)
                .await
                .map_err(err("cannot write the scim outbox"))?;
        }
        tx.commit().await.map_err(err("cannot commit a scim write"))?;
        Ok(())
    }

    /// Up to `limit` unpublished envelopes, oldest first, with their outbox sequence numbers.
    pub async fn scim_outbox_pending(&self, limit: usize) -> Result<Vec<(i64, Envelope)>, BackendError> {
        let rows = sqlx::query("SELECT seq, body FROM scim_outbox ORDER BY seq LIMIT ?")
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await
            .map_err(err("cannot read the scim outbox"))?;
        rows.iter()
            .map(|r| {
                let env = Envelope::from_json(r.get::<&str, _>(1))
                    .map_err(|e| BackendError::new("scim outbox row is not an envelope", e))?;
                Ok((r.get::<i64, _>(0), env))
            })
            .collect()
    }

    /// Forget published envelopes (every outbox row up to and including `seq`).
    pub async fn scim_outbox_delete_through(&self, seq: i64) -> Result<(), BackendError> {
        sqlx::query("DELETE FROM scim_outbox WHERE seq <= ?")
            .bind(seq)
            .execute(self.pool())
            .await
            .map_err(err("cannot trim the scim outbox"))?;
        Ok(())
    }

    /// Envelopes written but not yet published.
    pub async fn scim_outbox_depth(&self) -> Result<i64, BackendError> {
        sqlx::query("SELECT COUNT(*) FROM scim_outbox")
            .fetch_one(self.pool())
            .await
            .map(|r| r.get::<i64, _>(0))
            .map_err(err("cannot count the scim outbox"))
    }

    /// Resources in the directory (both kinds).
    pub async fn scim_resource_count(&self) -> Result<i64, BackendError> {
        sqlx::query("SELECT COUNT(*) FROM scim_resources")
            .fetch_one(self.pool())
            .await
            .map(|r| r.get::<i64, _>(0))
            .map_err(err("cannot count the scim directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_domain::envelope::{EnvelopeId, IdentityEvent, Source, Subject};
    use serde_json::json;

    fn envelope(id: &str) -> Envelope {
        Envelope {
            trace_parent: None,
            version: Envelope::VERSION,
            id: EnvelopeId(id.into()),
            source: Source::Scim,
            subject: Subject {
                key: "scim:u1".into(),
                email: Some("a@example.com".into()),
                display_name: None,
            },
            occurred_at: gatehouse_domain::clock::now(),
            received_at: gatehouse_domain::clock::now(),
            event: IdentityEvent::UserCreated,
            profile: Default::default(),
            source_event_type: "scim.user.create".into(),
            raw: json!({}),
        }
    }

    fn insert(id: &str, user_name: &str) -> ScimChange {
        ScimChange::Insert {
            id: id.into(),
            kind: ScimKind::User,
            user_name: Some(user_name.into()),
            body: json!({ "userName": user_name }),
        }
    }

    #[tokio::test]
    async fn write_is_atomic_with_its_outbox_and_checks_versions() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(dir.path()).await.unwrap();
        let at = gatehouse_domain::clock::now();
        db.scim_write(&ScimWrite {
            at,
            changes: vec![insert("u1", "Alice@Example.com")],
            outbox: vec![envelope("e1")],
        })
        .await
        .unwrap();
        let r = db.scim_get(ScimKind::User, "u1").await.unwrap().unwrap();
        assert_eq!(r.version, 1);
        assert!(db.scim_get(ScimKind::Group, "u1").await.unwrap().is_none());

        // userName is unique case-insensitively; the failed write leaves no outbox row.
        let e = db
            .scim_write(&ScimWrite {
                at,
                changes: vec![insert("u2", "alice@example.com")],
                outbox: vec![envelope("e2")],
            })
            .await
            .unwrap_err();
        assert!(matches!(e, ScimStoreError::Uniqueness), "{e}");
        assert_eq!(db.scim_outbox_depth().await.unwrap(), 1);

        // A write on a stale version changes nothing.
        let stale = ScimWrite {
            at,
            changes: vec![ScimChange::Update {
                id: "u1".into(),
                expected_version: 7,
                user_name: Some("bob".into()),
                body: json!({ "userName": "bob" }),
            }],
            outbox: vec![envelope("e3")],
        };
        assert!(matches!(
            db.scim_write(&stale).await.unwrap_err(),
            ScimStoreError::Stale
        ));
        assert_eq!(db.scim_outbox_depth().await.unwrap(), 1);

        let pending = db.scim_outbox_pending(10).await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1.id.0, "e1");
        db.scim_outbox_delete_through(pending[0].0).await.unwrap();
        assert_eq!(db.scim_outbox_depth().await.unwrap(), 0);

        db.scim_write(&ScimWrite {
            at,
            changes: vec![ScimChange::Delete {
                id: "u1".into(),
                expected_version: 1,
            }],
            outbox: vec![],
        })
        .await
        .unwrap();
        assert_eq!(db.scim_resource_count().await.unwrap(), 0);
    }
}
