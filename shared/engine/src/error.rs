//! What handling one envelope can fail with, and how the worker treats it: permanent (dead
//! letter), a delay the server asked for, or a race another handler won (handled again). A leaf
//! of the engine: the engine and the cloud pair both return it.

use gatehouse_domain::cloud::CloudError;
use gatehouse_domain::looker::{ErrorKind, LookerError};
use gatehouse_domain::ports::BackendError;
use gatehouse_domain::target::TargetName;
use gatehouse_targets::lease::LeaseLost;
use gatehouse_targets::{ReadError, TargetFailure};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Looker(#[from] LookerError),
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// Looker answered 409 to creating the user: another handler created it meanwhile.
    #[error("the looker user was created by another handler meanwhile: {0}")]
    CreateRaced(LookerError),
    /// A target registered with [`crate::engine::Engine::with_target`] failed.
    #[error(transparent)]
    Target(TargetFailure),
    /// Issue 16: an offboarding found no account of a person who was linked in the target.
    /// Permanent: the envelope is dead-lettered with this reason so an operator acts.
    #[error("unresolved offboarding in {target}: {reason}")]
    UnresolvedOffboarding { target: TargetName, reason: String },
    /// The queue lease the work ran under may have lapsed, so another processor may have the
    /// message (or the person's next one): nothing more was written. Not the envelope's fault:
    /// the worker lets the delivery go without settling it, never dead-letters it.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
}

impl<E: std::error::Error + Into<ProcessError> + 'static> From<ReadError<E>> for ProcessError {
    fn from(e: ReadError<E>) -> Self {
        match e {
            ReadError::Target(e) => e.into(),
            ReadError::Links(e) => ProcessError::Backend(e),
        }
    }
}

impl From<TargetFailure> for ProcessError {
    fn from(e: TargetFailure) -> Self {
        match e {
            TargetFailure::Ledger(e) => ProcessError::Backend(e),
            TargetFailure::LeaseLost(e) => ProcessError::LeaseLost(e),
            other => ProcessError::Target(other),
        }
    }
}

impl ProcessError {
    /// Retrying this delivery later cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            ProcessError::Looker(e) => matches!(e.kind, ErrorKind::Permanent | ErrorKind::Conflict),
            // Access denied by a cloud is permanent: the ledger row says so, retrying cannot help.
            ProcessError::Cloud(e) => matches!(e.kind, ErrorKind::Permanent | ErrorKind::Unauthorized),
            ProcessError::Target(TargetFailure::Target { kind, .. }) => {
                matches!(kind, ErrorKind::Permanent | ErrorKind::Unauthorized)
            }
            ProcessError::UnresolvedOffboarding { .. } => true,
            ProcessError::Backend(_)
            | ProcessError::CreateRaced(_)
            | ProcessError::Target(_)
            | ProcessError::LeaseLost(_) => false,
        }
    }

    /// The server asked for a delay.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProcessError::Looker(e) => e.retry_after,
            ProcessError::Cloud(e) => e.retry_after,
            ProcessError::Target(TargetFailure::Target { retry_after, .. }) => *retry_after,
            ProcessError::Backend(_)
            | ProcessError::CreateRaced(_)
            | ProcessError::Target(_)
            | ProcessError::UnresolvedOffboarding { .. }
            | ProcessError::LeaseLost(_) => None,
        }
    }

    /// Another handler of the same person got there first: handling the event again from a
    /// fresh read resolves it.
    pub(crate) fn is_race(&self) -> bool {
        match self {
            ProcessError::Backend(e) => e.is_subject_changed(),
            ProcessError::CreateRaced(_) => true,
            ProcessError::Looker(_)
            | ProcessError::Cloud(_)
            | ProcessError::Target(_)
            | ProcessError::UnresolvedOffboarding { .. }
            | ProcessError::LeaseLost(_) => false,
        }
    }
}
