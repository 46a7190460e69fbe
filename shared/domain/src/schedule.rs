//! The scheduled reconcile across replicas (issue 14): one leader per schedule tick, and the
//! run number of the rolling attribute audit. A port: SQLite and PostgreSQL implement it.

use crate::ports::BackendError;
use chrono::{DateTime, Utc};
use std::future::Future;

/// What a claim on a tick came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This holder runs the tick (a new claim, a renewal, or a lapsed leader's tick taken over).
    Won,
    /// Another holder's lease on it is live.
    Held,
    /// Someone already finished it.
    Finished,
}

/// Leases on scheduled reconcile ticks and the audit run counter, shared by every process on
/// the state store.
pub trait ReconcileSchedule: Send + Sync {
    /// Claim tick `tick` (the occurrence's time, RFC 3339) for `holder` until `until`: won
    /// when nobody claimed it, when `holder` already holds it (renewal), or when the holder's
    /// lease ended before `now` and the tick is not finished (takeover after a crash).
    fn claim_tick(
        &self,
        tick: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Claim, BackendError>> + Send;
    /// Like [`Self::claim_tick`] but only for a tick some holder claimed before: `Finished`
    /// when nobody did (a process starting never runs a tick nobody scheduled).
    fn take_over_tick(
        &self,
        tick: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Claim, BackendError>> + Send;
    /// Mark `tick` finished by `holder`; false when `holder` does not hold it any more.
    fn finish_tick(
        &self,
        tick: &str,
        holder: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;
    /// The next run number of the rolling attribute audit (1, 2, ...), one atomic increment.
    fn next_audit_run(&self) -> impl Future<Output = Result<u64, BackendError>> + Send;
}
