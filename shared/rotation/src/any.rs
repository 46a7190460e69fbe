//! The rotation store chosen by `[state]`: the processor's SQLite database (one machine) or its
//! PostgreSQL database (several rotator instances). One type, so the binaries need not be
//! generic over it.

#[cfg(feature = "postgres")]
use crate::postgres::PgRotations;
use crate::sqlite::SqliteRotations;
use crate::state::{Rotation, RotationStore, SecretState, Started};
use chrono::{DateTime, Utc};
use gatehouse_domain::ports::{BackendError, LedgerEntry, RotationRequest};
use gatehouse_store::state::AnyState;

/// The configured rotation store. Cheap to clone.
#[derive(Clone, Debug)]
pub enum AnyRotations {
    Sqlite(SqliteRotations),
    #[cfg(feature = "postgres")]
    Postgres(PgRotations),
}

impl From<AnyState> for AnyRotations {
    fn from(state: AnyState) -> Self {
        match state {
            AnyState::Sqlite(s) => AnyRotations::Sqlite(SqliteRotations::new(s)),
            #[cfg(feature = "postgres")]
            AnyState::Postgres(p) => AnyRotations::Postgres(PgRotations::new(p)),
        }
    }
}

impl AnyRotations {
    /// `sqlite` or `postgres`, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyRotations::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            AnyRotations::Postgres(_) => "postgres",
        }
    }

    /// The processor's state store on the same database.
    pub fn state(&self) -> AnyState {
        match self {
            AnyRotations::Sqlite(s) => AnyState::Sqlite(s.db().clone()),
            #[cfg(feature = "postgres")]
            AnyRotations::Postgres(p) => AnyState::Postgres(p.db().clone()),
        }
    }
}

/// Forward a `RotationStore` call to whichever backend is configured.
macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyRotations::Sqlite($s) => $call.await,
            #[cfg(feature = "postgres")]
            AnyRotations::Postgres($s) => $call.await,
        }
    };
}

impl RotationStore for AnyRotations {
    async fn start(&self, r: &Rotation) -> Result<Started, BackendError> {
        forward!(self, s => s.start(r))
    }
    async fn get(&self, id: &str) -> Result<Option<Rotation>, BackendError> {
        forward!(self, s => s.get(id))
    }
    async fn history(&self, secret: &str) -> Result<Vec<Rotation>, BackendError> {
        forward!(self, s => s.history(secret))
    }
    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Rotation>, BackendError> {
        forward!(self, s => s.due(now))
    }
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, BackendError> {
        forward!(self, s => s.next_due())
    }
    async fn claim(
        &self,
        id: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        forward!(self, s => s.claim(id, owner, until, now))
    }
    async fn save(&self, r: &Rotation, owner: &str) -> Result<bool, BackendError> {
        forward!(self, s => s.save(r, owner))
    }
    async fn release(&self, id: &str, owner: &str) -> Result<(), BackendError> {
        forward!(self, s => s.release(id, owner))
    }
    async fn secret_state(&self, secret: &str) -> Result<SecretState, BackendError> {
        forward!(self, s => s.secret_state(secret))
    }
    async fn set_backoff(
        &self,
        secret: &str,
        failures: u32,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), BackendError> {
        forward!(self, s => s.set_backoff(secret, failures, retry_at))
    }
    async fn claim_fire(
        &self,
        secret: &str,
        prev: Option<DateTime<Utc>>,
        fire: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        forward!(self, s => s.claim_fire(secret, prev, fire))
    }
    async fn append_ledger(&self, entries: &[LedgerEntry]) -> Result<(), BackendError> {
        forward!(self, s => s.append_ledger(entries))
    }
    async fn ledger(&self) -> Result<Vec<LedgerEntry>, BackendError> {
        forward!(self, s => s.ledger())
    }
    async fn record_request(&self, r: &RotationRequest, at: DateTime<Utc>) -> Result<bool, BackendError> {
        forward!(self, s => s.record_request(r, at))
    }
    async fn pending_requests(&self) -> Result<Vec<RotationRequest>, BackendError> {
        forward!(self, s => s.pending_requests())
    }
    async fn mark_handled(&self, envelope_id: &str, at: DateTime<Utc>) -> Result<(), BackendError> {
        forward!(self, s => s.mark_handled(envelope_id, at))
    }
}
