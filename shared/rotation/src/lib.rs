//! The rotator: keeps machine credentials short-lived without breaking the services that use
//! them.
//!
//! * [`state`]: the persisted state machine (create → set → test → finish → revoke → destroy)
//!   and the [`state::RotationStore`] port; [`sqlite`], [`postgres`] and [`memory`] implement it,
//!   [`any::AnyRotations`] is the one `[state]` selects.
//! * [`kinds`]: Looker API3 keys, AWS IAM access keys, GCP service-account keys.
//! * [`stores`]: AWS Secrets Manager (staging labels), GCP Secret Manager (versions).
//! * [`rotator`]: triggers (schedule, requests, retries), single-flight leases, rollback.
//! * [`build`]: declared secrets from configuration; [`rotator`](build::rotator) over the
//!   configured state store for the services.

pub mod any;
pub mod build;
pub mod clock;
pub mod credential;
pub mod error;
pub mod gcp;
pub mod kinds;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod requests;
pub mod rotator;
pub mod sqlite;
pub mod state;
pub mod stores;

pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use credential::Credential;
pub use error::{ErrorKind, RotationError};
pub use rotator::{Declared, METRIC_SECRET_AGE, Rotator, RotatorError, Settings, StepOutcome, TickReport};
pub use state::{Phase, Rotation, RotationStore, Started};
