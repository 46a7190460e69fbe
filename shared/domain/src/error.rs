//! The one error core every client classifies into, once, where the call was made.
//!
//! - [`Kind`]: what a caller can do about a failure (retry after a delay, retry with backoff,
//!   give up). Every client (Looker, AWS IAM, GCP IAM, SQS, Pub/Sub, Graph, the rotation kinds)
//!   maps its own failures to it in ONE place, its `classify`.
//! - [`Classified`]: the trait the one retry policy (`gatehouse_platform::retry`) reads: the kind
//!   and the server's `Retry-After`. Nothing else decides whether to retry.
//! - [`Error`]: a classified failure that keeps its cause (`#[source]`), for clients that have no
//!   error type of their own.
//! - [`chain`]: the one rendering of a cause chain for logs and ledger text; causes are kept as
//!   values and only rendered at the edge.
//!
//! Pure: no I/O here.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How a failed call should be treated. One place per client classifies; everyone else matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// 429 / throttling: retry, no sooner than the server's `Retry-After`.
    Throttled,
    /// 5xx, timeouts, connection errors: retry with backoff.
    Transient,
    /// 401 (after a fresh login), 403: credentials or permissions are wrong. Never retried.
    Unauthorized,
    /// 404 (for a revocation: already done). Never retried.
    NotFound,
    /// 409 / a concurrent change: read again (the caller decides how often).
    Conflict,
    /// Anything else (400, 422, a body that does not match the spec): retrying will not help.
    Permanent,
}

impl Kind {
    /// The metric label (`kind`), as serde names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Throttled => "throttled",
            Kind::Transient => "transient",
            Kind::Unauthorized => "unauthorized",
            Kind::NotFound => "not_found",
            Kind::Conflict => "conflict",
            Kind::Permanent => "permanent",
        }
    }

    /// Another try of the same call may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Kind::Throttled | Kind::Transient)
    }
}

/// The one table from an HTTP status to a [`Kind`] (Looker, GCP REST, Graph, AWS's status
/// when it gives no error code). `409` is a conflict; `408` and every 5xx are transient.
pub fn classify_status(status: u16) -> Kind {
    match status {
        429 => Kind::Throttled,
        401 | 403 => Kind::Unauthorized,
        404 => Kind::NotFound,
        409 => Kind::Conflict,
        408 | 500..=599 => Kind::Transient,
        _ => Kind::Permanent,
    }
}

/// A failure classified once by the client that saw it: what the retry policy reads.
pub trait Classified: std::error::Error + Send + Sync + 'static {
    fn kind(&self) -> Kind;
    /// The delay the server asked for (a 429's `Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// A shared, clonable cause.
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A classified failure with its cause kept (`#[source]`), for clients without an error type of
/// their own. `message` says what was being done (lowercase, never a secret); the cause says why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    #[source]
    pub source: Option<Source>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            status: None,
            retry_after: None,
            source: None,
        }
    }

    /// Keep `cause` as this error's source.
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(cause));
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

impl Classified for Error {
    fn kind(&self) -> Kind {
        self.kind
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// The cause chain of an error, `: `-joined (a cause already quoted by its parent is not
/// repeated). The one place a chain becomes text: logs and ledger rows.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !m.is_empty() && !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Io;

    #[derive(Debug, thiserror::Error)]
    #[error("dispatch failure")]
    struct Dispatch(#[source] Io);

    #[test]
    fn statuses_are_classified_once() {
        for (s, k) in [
            (429, Kind::Throttled),
            (401, Kind::Unauthorized),
            (403, Kind::Unauthorized),
            (404, Kind::NotFound),
            (409, Kind::Conflict),
            (500, Kind::Transient),
            (503, Kind::Transient),
            (408, Kind::Transient),
            (400, Kind::Permanent),
            (422, Kind::Permanent),
        ] {
            assert_eq!(classify_status(s), k, "{s}");
        }
        assert!(Kind::Throttled.is_retryable() && Kind::Transient.is_retryable());
        assert!(!Kind::Unauthorized.is_retryable() && !Kind::NotFound.is_retryable());
    }

    #[test]
    fn the_cause_chain_is_kept_and_rendered_whole() {
        let e = Error::new(Kind::Transient, "iam ListGroupsForUser failed").caused_by(Dispatch(Io));
        let src = std::error::Error::source(&e).expect("cause kept");
        assert_eq!(src.to_string(), "dispatch failure");
        assert_eq!(
            chain(&e),
            "iam ListGroupsForUser failed: dispatch failure: connection refused"
        );
        // A clone keeps the cause too (errors travel between tasks).
        assert_eq!(chain(&e.clone()), chain(&e));
    }
}
