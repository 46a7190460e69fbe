//! One error type for every kind and store, classified once into a small [`ErrorKind`].

use gatehouse_domain::ports::BackendError;
use std::time::Duration;

/// What a caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 429 / throttling: retry after the given delay (or the backoff).
    Throttled { retry_after: Option<Duration> },
    /// 5xx, timeouts, connection errors: retry with backoff.
    Transient,
    /// The object is gone (for a delete this means done).
    NotFound,
    /// The credentials were refused (for a test step: the new key does not work).
    Unauthorized,
    /// Anything retrying cannot fix.
    Permanent,
}

/// A kind, store or state-store failure. Messages are lowercase and never carry a secret value.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RotationError {
    pub kind: ErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl RotationError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RotationError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// Keep `cause` as this error's source: the message says what was being done, the cause
    /// why (rendered whole only at the edge, by [`chain`]).
    pub fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(cause));
        self
    }

    /// Another try later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, ErrorKind::Throttled { .. } | ErrorKind::Transient)
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// The server's requested delay, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::Throttled { retry_after } => retry_after,
            _ => None,
        }
    }
}

/// The error core's view: what the one retry policy reads.
impl gatehouse_domain::error::Classified for RotationError {
    fn kind(&self) -> gatehouse_domain::error::Kind {
        use gatehouse_domain::error::Kind;
        match self.kind {
            ErrorKind::Throttled { .. } => Kind::Throttled,
            ErrorKind::Transient => Kind::Transient,
            ErrorKind::NotFound => Kind::NotFound,
            ErrorKind::Unauthorized => Kind::Unauthorized,
            ErrorKind::Permanent => Kind::Permanent,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        RotationError::retry_after(self)
    }
}

impl From<BackendError> for RotationError {
    fn from(e: BackendError) -> Self {
        RotationError {
            kind: ErrorKind::Transient,
            message: "state store failed".into(),
            source: Some(Box::new(e)),
        }
    }
}

/// The one place an HTTP status becomes an [`ErrorKind`] (GCP REST, Looker, AWS HTTP status).
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> ErrorKind {
    use gatehouse_domain::error::Kind;
    match gatehouse_domain::error::classify_status(status) {
        Kind::Throttled => ErrorKind::Throttled { retry_after },
        Kind::Unauthorized => ErrorKind::Unauthorized,
        Kind::NotFound => ErrorKind::NotFound,
        Kind::Transient => ErrorKind::Transient,
        // A rotation step has no read-again: a conflict is as final as any other refusal.
        Kind::Conflict | Kind::Permanent => ErrorKind::Permanent,
    }
}

/// An AWS SDK error: the service's error code first, then the HTTP status, then the transport.
pub fn classify_aws(code: Option<&str>, status: Option<u16>, is_service_error: bool) -> ErrorKind {
    match code {
        Some("ThrottlingException" | "Throttling" | "TooManyRequestsException" | "RequestLimitExceeded") => {
            return ErrorKind::Throttled { retry_after: None };
        }
        Some("ResourceNotFoundException" | "NoSuchEntity" | "NoSuchEntityException") => {
            return ErrorKind::NotFound;
        }
        Some(
            "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "UnrecognizedClientException"
            | "AccessDenied"
            | "AccessDeniedException"
            | "ExpiredToken",
        ) => return ErrorKind::Unauthorized,
        Some("InternalServiceError" | "InternalFailure" | "ServiceUnavailable" | "ServiceFailure") => {
            return ErrorKind::Transient;
        }
        _ => {}
    }
    match status {
        Some(s) => classify_status(s, None),
        None if is_service_error => ErrorKind::Permanent,
        // Dispatch failures, timeouts, unreadable responses.
        None => ErrorKind::Transient,
    }
}

/// An AWS SDK error → [`RotationError`], with `what` naming the call.
pub fn aws_error<E>(
    what: &str,
    e: aws_sdk_sts::error::SdkError<E, aws_sdk_sts::config::http::HttpResponse>,
) -> RotationError
where
    E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_sts::error::SdkError;
    let (code, message, service) = match &e {
        SdkError::ServiceError(s) => (
            s.err().code().map(str::to_string),
            s.err().message().map(str::to_string),
            true,
        ),
        _ => (None, None, false),
    };
    let status = e.raw_response().map(|r| r.status().as_u16());
    let kind = classify_aws(code.as_deref(), status, service);
    let detail = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => chain(&e),
    };
    RotationError {
        source: Some(Box::new(e)),
        ..RotationError::new(kind, format!("{what} failed: {detail}"))
    }
}

/// The cause chain of an error, `: `-joined: the error core's one rendering.
pub use gatehouse_domain::error::chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_aws_codes_are_classified_once() {
        let d = Some(Duration::from_secs(3));
        assert_eq!(classify_status(429, d), ErrorKind::Throttled { retry_after: d });
        assert_eq!(classify_status(503, None), ErrorKind::Transient);
        assert_eq!(classify_status(404, None), ErrorKind::NotFound);
        assert_eq!(classify_status(401, None), ErrorKind::Unauthorized);
        assert_eq!(classify_status(409, None), ErrorKind::Permanent);
        assert_eq!(
            classify_aws(Some("NoSuchEntity"), None, true),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify_aws(Some("InvalidClientTokenId"), None, true),
            ErrorKind::Unauthorized
        );
        assert_eq!(
            classify_aws(Some("ThrottlingException"), None, true),
            ErrorKind::Throttled { retry_after: None }
        );
        assert_eq!(
            classify_aws(Some("LimitExceeded"), None, true),
            ErrorKind::Permanent
        );
        assert_eq!(classify_aws(None, None, false), ErrorKind::Transient);
        assert!(RotationError::new(ErrorKind::Transient, "x").is_retryable());
    }
}
