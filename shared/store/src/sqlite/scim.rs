//! SCIM directory and outbox on SQLite.
//!
//! Each User and Group is one row holding its JSON resource and a version (the ETag). A write
//! names the version it read, so two concurrent writers of one resource cannot lose an update: the
//! second one gets [`ScimStoreError::Stale`] and starts over from a fresh read. The directory
//! change and the envelopes it causes are committed in one transaction (transactional outbox); the
//! relay then publishes the outbox to the queue and deletes what it published.

use super::group::{Done, Op};
use super::{Sqlite, err, parse_ts, ts};
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

/// A [`ScimWrite`] with its JSON rendered, as the writer thread runs it.
pub(crate) struct ScimRows {
    at: String,
    changes: Vec<RowChange>,
    /// `(envelope_id, body)`.
    outbox: Vec<(String, String)>,
}

enum RowChange {
    Insert {
        id: String,
        kind: ScimKind,
        user_name_key: Option<String>,
        body: String,
    },
    Update {
        id: String,
        expected_version: i64,
        user_name_key: Option<String>,
        body: String,
    },
    Delete {
        id: String,
        expected_version: i64,
    },
}

impl ScimRows {
    fn new(write: &ScimWrite) -> Self {
        let changes = write
            .changes
            .iter()
            .map(|change| match change {
                ScimChange::Insert {
                    id,
                    kind,
                    user_name,
                    body,
                } => RowChange::Insert {
                    id: id.clone(),
                    kind: *kind,
                    user_name_key: user_name_key(user_name),
                    body: body.to_string(),
                },
                ScimChange::Update {
                    id,
                    expected_version,
                    user_name,
                    body,
                } => RowChange::Update {
                    id: id.clone(),
                    expected_version: *expected_version,
                    user_name_key: user_name_key(user_name),
                    body: body.to_string(),
                },
                ScimChange::Delete { id, expected_version } => RowChange::Delete {
                    id: id.clone(),
                    expected_version: *expected_version,
                },
            })
            .collect();
        ScimRows {
            at: ts(write.at),
            changes,
            outbox: write
                .outbox
                .iter()
                .map(|e| (e.id.0.clone(), e.to_json()))
                .collect(),
        }
    }
}

/// Run one SCIM write's statements (on the writer thread, inside the write's savepoint: any
/// error here rolls the whole write back, outbox rows included).
pub(crate) fn write_rows(conn: &rusqlite::Connection, rows: &ScimRows) -> Result<(), ScimStoreError> {
    for change in &rows.changes {
        match change {
            RowChange::Insert {
                id,
                kind,
                user_name_key,
                body,
            } => {
                conn.prepare_cached(
                    "INSERT INTO scim_resources (id, kind, user_name_key, body, version, created, last_modified)
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
                )
                .and_then(|mut s| s.execute(rusqlite::params![id, kind.as_str(), user_name_key, body, rows.at]))
                .map_err(refused_or("cannot insert a scim resource"))?;
            }
            RowChange::Update {
                id,
                expected_version,
                user_name_key,
                body,
            } => {
                let changed = conn
                    .prepare_cached(
                        "UPDATE scim_resources SET body = ?1, user_name_key = ?2, version = version + 1,
                         last_modified = ?3 WHERE id = ?4 AND version = ?5",
                    )
                    .and_then(|mut s| {
                        s.execute(rusqlite::params![
                            body,
                            user_name_key,
                            rows.at,
                            id,
                            expected_version
                        ])
                    })
                    .map_err(refused_or("cannot update a scim resource"))?;
                if changed != 1 {
                    return Err(ScimStoreError::Stale);
                }
            }
            RowChange::Delete { id, expected_version } => {
                let changed = conn
                    .prepare_cached("DELETE FROM scim_resources WHERE id = ?1 AND version = ?2")
                    .and_then(|mut s| s.execute(rusqlite::params![id, expected_version]))
                    .map_err(err("cannot delete a scim resource"))?;
                if changed != 1 {
                    return Err(ScimStoreError::Stale);
                }
            }
        }
    }
    let mut insert = conn
        .prepare_cached("INSERT INTO scim_outbox (envelope_id, body) VALUES (?1, ?2)")
        .map_err(err("cannot write the scim outbox"))?;
    for (id, body) in &rows.outbox {
        insert
            .execute(rusqlite::params![id, body])
            .map_err(err("cannot write the scim outbox"))?;
    }
    Ok(())
}

/// A unique index refusing the row (the userName's key, or an id already used) is the
/// client's conflict; anything else is the store's failure.
fn refused_or(context: &'static str) -> impl FnOnce(rusqlite::Error) -> ScimStoreError {
    move |e| {
        let unique = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        );
        if unique {
            ScimStoreError::Uniqueness
        } else {
            ScimStoreError::Backend(BackendError::new(context, e))
        }
    }
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

    /// Commit directory changes and their outbox envelopes in one transaction: a write of the
    /// group commit (issue 13), so many SCIM requests share one transaction and one fsync, each
    /// in a savepoint of its own (a refused write rolls back alone). It used to be a
    /// transaction of its own on the read pool, taking SQLite's write lock against the group's
    /// thread and sleeping in the busy handler whenever the queue was busy.
    pub async fn scim_write(&self, write: &ScimWrite) -> Result<(), ScimStoreError> {
        // Rendered here, on the caller's task: the writer thread is the one every write waits for.
        let rows = ScimRows::new(write);
        match self.write(Op::Scim(Box::new(rows))).await? {
            Done::Scim(result) => result,
            _ => Err(BackendError::new("cannot write the scim directory", "unexpected writer answer").into()),
        }
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
        let writer = self.writer().await;
        sqlx::query("DELETE FROM scim_outbox WHERE seq <= ?")
            .bind(seq)
            .execute(&*writer)
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

    /// Many SCIM requests share one transaction (one fsync), and a refused one (its second
    /// change takes a userName already held) rolls back alone: its first change and its outbox
    /// row included.
    #[tokio::test]
    async fn concurrent_writes_share_one_commit_and_a_refused_one_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(dir.path()).await.unwrap();
        let at = gatehouse_domain::clock::now();
        db.scim_write(&ScimWrite {
            at,
            changes: vec![insert("held", "taken@example.com")],
            outbox: vec![envelope("e-held")],
        })
        .await
        .unwrap();
        let before = db.writer_commits();
        let turn = db.hold_write_turn().await;
        let mut writes = Vec::new();
        for i in 0..8 {
            let mut changes = vec![insert(&format!("u{i}"), &format!("user{i}@example.com"))];
            if i == 7 {
                changes.push(insert("u7b", "TAKEN@example.com"));
            }
            let db = db.clone();
            writes.push(tokio::spawn(async move {
                db.scim_write(&ScimWrite {
                    at,
                    changes,
                    outbox: vec![envelope(&format!("e{i}"))],
                })
                .await
            }));
        }
        while db.writes_waiting() < 8 {
            tokio::task::yield_now().await;
        }
        drop(turn);
        let mut answers = Vec::new();
        for w in writes {
            answers.push(w.await.unwrap());
        }
        for (i, a) in answers.iter().enumerate() {
            match (i, a) {
                (7, Err(ScimStoreError::Uniqueness)) | (0..7, Ok(())) => {}
                (i, a) => panic!("write {i}: {a:?}"),
            }
        }
        let after = db.writer_commits();
        assert_eq!(after.commits - before.commits, 1, "eight writes, one transaction");
        assert_eq!(after.writes - before.writes, 8);
        assert!(db.scim_get(ScimKind::User, "u7").await.unwrap().is_none());
        assert_eq!(db.scim_resource_count().await.unwrap(), 8, "held + u0..u6");
        // In whatever order the writes queued for the turn: compare as sets.
        let mut outbox: Vec<String> = db
            .scim_outbox_pending(100)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| e.id.0)
            .collect();
        outbox.sort();
        assert_eq!(outbox, ["e-held", "e0", "e1", "e2", "e3", "e4", "e5", "e6"]);
    }
}
