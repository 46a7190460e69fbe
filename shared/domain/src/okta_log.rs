//! The Okta System Log catch-up's durable position (`GET /api/v1/logs` polling): the port the
//! state stores implement, so the poller resumes where it stopped after any restart.

use crate::ports::BackendError;
use chrono::{DateTime, Utc};
use std::future::Future;

/// Where the System Log catch-up of one Okta org stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCursor {
    /// The last `rel="next"` link Okta returned (an absolute URL carrying Okta's opaque `after`
    /// token): the next poll follows it, as Okta asks ("rely on the system-generated links").
    pub next_url: Option<String>,
    /// The `filter` the link was made for; a different filter starts again from
    /// [`LogCursor::covered_until`] (re-read events are deduplicated by envelope id).
    pub filter: String,
    /// Everything Okta had persisted before this instant has been read and enqueued (the start
    /// of the last request that returned no more events). The catch-up lag is now minus this.
    pub covered_until: DateTime<Utc>,
}

/// Durable [`LogCursor`]s, one per Okta org (`okta.org`).
pub trait LogCursors: Send + Sync {
    fn load_okta_cursor(
        &self,
        org: &str,
    ) -> impl Future<Output = Result<Option<LogCursor>, BackendError>> + Send;
    /// Replace the org's cursor (one upsert).
    fn save_okta_cursor(
        &self,
        org: &str,
        cursor: &LogCursor,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
}
