//! The persisted rotation: its phases, and the [`RotationStore`] that keeps rotations, the
//! per-secret schedule/backoff state, the ledger and the rotation requests: SQLite
//! ([`crate::sqlite::SqliteRotations`]), PostgreSQL ([`crate::postgres::PgRotations`]) and an
//! in-memory store for tests, one contract suite for all three (`tests/it/store_contract.rs`).

use chrono::{DateTime, Utc};
use gatehouse_domain::ports::{BackendError, LedgerEntry, RotationRequest};
use std::future::Future;

/// Where a rotation stands. The first four are "active": at most one per secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Recorded; the key ids that exist are snapshotted before anything is created.
    Started,
    /// The new key exists at the provider.
    Created,
    /// The new credential is in the store (AWS: AWSPENDING; GCP: the latest version).
    Set,
    /// The new credential was tested and works.
    Tested,
    /// Readers get the new credential; the old one waits for the grace period.
    Finished,
    /// The old credential is disabled (Looker: deleted); its deletion waits.
    Revoked,
    /// The old credential is deleted.
    Done,
    /// The test failed (or creating failed for good): everything new was removed.
    RolledBack,
}

impl Phase {
    pub const ACTIVE: [Phase; 4] = [Phase::Started, Phase::Created, Phase::Set, Phase::Tested];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Started => "started",
            Phase::Created => "created",
            Phase::Set => "set",
            Phase::Tested => "tested",
            Phase::Finished => "finished",
            Phase::Revoked => "revoked",
            Phase::Done => "done",
            Phase::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Started,
            Phase::Created,
            Phase::Set,
            Phase::Tested,
            Phase::Finished,
            Phase::Revoked,
            Phase::Done,
            Phase::RolledBack,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// Before the new credential is what readers get.
    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    /// Nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Done | Phase::RolledBack)
    }
}

/// One rotation of one secret, as persisted after every step. Holds ids, never secret values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Also the AWS `ClientRequestToken` of the new version.
    pub id: String,
    pub secret: String,
    /// `schedule`, `manual`, `secret_rotate`, `holder_offboarded`, `out_of_band`, `retry`.
    pub trigger: String,
    pub phase: Phase,
    /// Key ids that existed before create (a key not in it and not `new_key_id` is an orphan of
    /// a crash during create).
    pub keys_before: Option<Vec<String>>,
    pub old_key_id: Option<String>,
    pub old_version: Option<String>,
    pub new_key_id: Option<String>,
    pub new_version: Option<String>,
    /// When the next step may run (grace periods, backoff).
    pub due_at: DateTime<Utc>,
    /// Failed tries of the current step.
    pub attempts: u32,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
}

impl Rotation {
    /// The rotation of `secret` for one rotation request: its id is derived from the request's
    /// envelope id and the secret, so every instance that reads the request asks for the same
    /// rotation and the store starts it at most once, even after it has finished.
    pub fn for_request(secret: &str, trigger: &str, request: &str, now: DateTime<Utc>) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(request.as_bytes())
            .chain_update([0])
            .chain_update(secret.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Rotation {
            id: uuid::Uuid::from_bytes(bytes).to_string(),
            ..Rotation::new(secret, trigger, now)
        }
    }

    /// A new rotation, due now.
    pub fn new(secret: &str, trigger: &str, now: DateTime<Utc>) -> Self {
        Rotation {
            id: uuid::Uuid::new_v4().to_string(),
            secret: secret.to_string(),
            trigger: trigger.to_string(),
            phase: Phase::Started,
            keys_before: None,
            old_key_id: None,
            old_version: None,
            new_key_id: None,
            new_version: None,
            due_at: now,
            attempts: 0,
            error: None,
            started_at: now,
        }
    }
}

/// What asking for a rotation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new rotation with this id.
    New(String),
    /// The secret already has an active rotation (this one).
    AlreadyActive(String),
    /// A rotation with the asked-for id exists already (another instance took the same
    /// request): nothing new was started.
    Existed(String),
}

/// Per-secret state: the last schedule occurrence claimed and the failure backoff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretState {
    pub last_fire: Option<DateTime<Utc>>,
    pub failures: u32,
    pub retry_at: Option<DateTime<Utc>>,
}

/// Persistence of the rotator. Every method is one atomic operation.
pub trait RotationStore: Send + Sync + 'static {
    /// Insert `r` unless the secret has an active rotation.
    fn start(&self, r: &Rotation) -> impl Future<Output = Result<Started, BackendError>> + Send;
    fn get(&self, id: &str) -> impl Future<Output = Result<Option<Rotation>, BackendError>> + Send;
    /// Every rotation of a secret, oldest first.
    fn history(&self, secret: &str) -> impl Future<Output = Result<Vec<Rotation>, BackendError>> + Send;
    /// Non-terminal rotations due at `now`, oldest first.
    fn due(&self, now: DateTime<Utc>) -> impl Future<Output = Result<Vec<Rotation>, BackendError>> + Send;
    /// The earliest `due_at` of a non-terminal rotation.
    fn next_due(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>, BackendError>> + Send;
    /// Take (or renew) the lease on a rotation; `false` if another live owner holds it.
    fn claim(
        &self,
        id: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;
    /// Write `r` if `owner` still holds its lease; `false` if the lease was lost.
    fn save(&self, r: &Rotation, owner: &str) -> impl Future<Output = Result<bool, BackendError>> + Send;
    fn release(&self, id: &str, owner: &str) -> impl Future<Output = Result<(), BackendError>> + Send;
    fn secret_state(&self, secret: &str) -> impl Future<Output = Result<SecretState, BackendError>> + Send;
    /// Set the failure backoff of a secret.
    fn set_backoff(
        &self,
        secret: &str,
        failures: u32,
        retry_at: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Move `last_fire` from `prev` to `fire`; `false` if another instance moved it first.
    fn claim_fire(
        &self,
        secret: &str,
        prev: Option<DateTime<Utc>>,
        fire: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;
    fn append_ledger(&self, entries: &[LedgerEntry])
    -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Ledger rows of rotations (subject `secret:NAME`), oldest first.
    fn ledger(&self) -> impl Future<Output = Result<Vec<LedgerEntry>, BackendError>> + Send;
    /// Record a request received from the rotation queue in the rotator's own inbox, once per
    /// envelope id (a redelivery or a republished request adds nothing): `true` if it was new.
    /// The rotator acks the delivery only after this returns.
    fn record_request(
        &self,
        request: &RotationRequest,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;
    /// Rotation requests not yet handled, oldest first.
    fn pending_requests(&self) -> impl Future<Output = Result<Vec<RotationRequest>, BackendError>> + Send;
    fn mark_handled(
        &self,
        envelope_id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
