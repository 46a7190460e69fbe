//! The state store chosen in configuration: SQLite (one machine) or PostgreSQL (several
//! replicas). One type, so the engine and the CLI need not be generic over it.

#[cfg(feature = "postgres")]
use crate::postgres::Postgres;
use crate::sqlite::Sqlite;
use chrono::{DateTime, Utc};
use gatehouse_domain::breaker::{AdmitLimits, Change, HeldChange, Settle, Trip, Verdict};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::ledger_chain::ChainHead;
use gatehouse_domain::okta_log::{LogCursor, LogCursors};
use gatehouse_domain::ports::{
    BackendError, LedgerEntry, LedgerRow, LookerCallCounts, Outcome, ScheduledDeletion, StateStore,
    SubjectState,
};

/// The configured state store. Cheap to clone.
#[derive(Clone, Debug)]
pub enum AnyState {
    Sqlite(Sqlite),
    #[cfg(feature = "postgres")]
    Postgres(Postgres),
}

impl AnyState {
    /// `sqlite` or `postgres`, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyState::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            AnyState::Postgres(_) => "postgres",
        }
    }

    /// Whether the database answers (for `/readyz`).
    /// The SQLite database, when it is the state store.
    pub fn sqlite(&self) -> Option<&Sqlite> {
        match self {
            AnyState::Sqlite(s) => Some(s),
            #[cfg(feature = "postgres")]
            AnyState::Postgres(_) => None,
        }
    }

    pub async fn ping(&self) -> bool {
        match self {
            AnyState::Sqlite(s) => s.ping().await,
            #[cfg(feature = "postgres")]
            AnyState::Postgres(p) => p.ping().await,
        }
    }

    pub async fn close(&self) {
        match self {
            AnyState::Sqlite(s) => s.close().await,
            #[cfg(feature = "postgres")]
            AnyState::Postgres(p) => p.close().await,
        }
    }
}

/// Forward a `StateStore` call to whichever backend is configured.
macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyState::Sqlite($s) => $call.await,
            #[cfg(feature = "postgres")]
            AnyState::Postgres($s) => $call.await,
        }
    };
}

impl gatehouse_domain::ports::Directory for AnyState {
    async fn subjects(&self) -> Result<Vec<SubjectState>, BackendError> {
        forward!(self, s => gatehouse_domain::ports::Directory::subjects(s))
    }
}

impl LookerCallCounts for AnyState {
    async fn add_looker_calls(&self, month: &str, delta: u64) -> Result<u64, BackendError> {
        forward!(self, s => s.add_looker_calls(month, delta))
    }
    async fn looker_calls(&self, month: &str) -> Result<u64, BackendError> {
        forward!(self, s => s.looker_calls(month))
    }
}

impl gatehouse_domain::ports::OffboardingLog for AnyState {
    async fn offboardings(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<gatehouse_domain::ports::OffboardingTimes>, BackendError> {
        forward!(self, s => s.offboardings(since, until))
    }
}

impl gatehouse_domain::schedule::ReconcileSchedule for AnyState {
    async fn claim_tick(
        &self,
        tick: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<gatehouse_domain::schedule::Claim, BackendError> {
        forward!(self, s => s.claim_tick(tick, holder, now, until))
    }
    async fn take_over_tick(
        &self,
        tick: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<gatehouse_domain::schedule::Claim, BackendError> {
        forward!(self, s => s.take_over_tick(tick, holder, now, until))
    }
    async fn finish_tick(&self, tick: &str, holder: &str) -> Result<bool, BackendError> {
        forward!(self, s => s.finish_tick(tick, holder))
    }
    async fn next_audit_run(&self) -> Result<u64, BackendError> {
        forward!(self, s => s.next_audit_run())
    }
}

impl gatehouse_domain::access::AccessSnapshots for AnyState {
    async fn save_access_snapshot(
        &self,
        snapshot: &gatehouse_domain::access::AccessSnapshot,
        retention: gatehouse_domain::access::Retention,
    ) -> Result<(), BackendError> {
        forward!(self, s => s.save_access_snapshot(snapshot, retention))
    }
    async fn access_snapshot_at(
        &self,
        as_of: DateTime<Utc>,
    ) -> Result<Option<gatehouse_domain::access::AccessSnapshot>, BackendError> {
        forward!(self, s => s.access_snapshot_at(as_of))
    }
    async fn access_snapshot_runs(&self) -> Result<Vec<DateTime<Utc>>, BackendError> {
        forward!(self, s => s.access_snapshot_runs())
    }
}

impl StateStore for AnyState {
    async fn is_processed(&self, id: &EnvelopeId) -> Result<bool, BackendError> {
        forward!(self, s => s.is_processed(id))
    }
    async fn load_subject(&self, key: &str) -> Result<Option<SubjectState>, BackendError> {
        forward!(self, s => s.load_subject(key))
    }
    async fn commit(&self, outcome: Outcome) -> Result<(), BackendError> {
        forward!(self, s => s.commit(outcome))
    }
    async fn forget_converged(&self, key: &str, base_version: i64) -> Result<i64, BackendError> {
        forward!(self, s => s.forget_converged(key, base_version))
    }
    async fn append_ledger(&self, entries: &[LedgerEntry]) -> Result<(), BackendError> {
        forward!(self, s => s.append_ledger(entries))
    }
    async fn ledger_head(&self) -> Result<Option<ChainHead>, BackendError> {
        forward!(self, s => s.ledger_head())
    }
    async fn ledger_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<LedgerRow>, BackendError> {
        forward!(self, s => s.ledger_since(since))
    }
    async fn due_deletions(&self, now: DateTime<Utc>) -> Result<Vec<ScheduledDeletion>, BackendError> {
        forward!(self, s => s.due_deletions(now))
    }
    async fn finish_deletion(&self, subject: &str) -> Result<(), BackendError> {
        forward!(self, s => s.finish_deletion(subject))
    }
    async fn account_links(&self, target: &str, person: &str) -> Result<Vec<String>, BackendError> {
        forward!(self, s => s.account_links(target, person))
    }
    async fn link_accounts(
        &self,
        target: &str,
        person: &str,
        accounts: &[String],
    ) -> Result<(), BackendError> {
        forward!(self, s => s.link_accounts(target, person, accounts))
    }

    async fn breaker_admit(&self, change: &Change, limits: &AdmitLimits) -> Result<Verdict, BackendError> {
        forward!(self, s => s.breaker_admit(change, limits))
    }
    async fn breaker_trips(&self) -> Result<Vec<Trip>, BackendError> {
        forward!(self, s => s.breaker_trips())
    }
    async fn breaker_held(&self, source: Option<&str>) -> Result<Vec<HeldChange>, BackendError> {
        forward!(self, s => s.breaker_held(source))
    }
    async fn breaker_settle(&self, seq: i64, decision: Settle, actor: &str) -> Result<(), BackendError> {
        forward!(self, s => s.breaker_settle(seq, decision, actor))
    }
    async fn breaker_reset(&self, source: Option<&str>) -> Result<Vec<Trip>, BackendError> {
        forward!(self, s => s.breaker_reset(source))
    }
}

impl LogCursors for AnyState {
    async fn load_okta_cursor(&self, org: &str) -> Result<Option<LogCursor>, BackendError> {
        forward!(self, s => s.load_okta_cursor(org))
    }
    async fn save_okta_cursor(&self, org: &str, cursor: &LogCursor) -> Result<(), BackendError> {
        forward!(self, s => s.save_okta_cursor(org, cursor))
    }
}
