//! The queue backends' failures, classified once into the error core
//! ([`gatehouse_domain::error::Kind`]): SQS by its error code (then its HTTP status), Pub/Sub
//! by its gRPC status code. A [`BackendError`] made here carries a
//! [`gatehouse_domain::error::Error`] with that kind as its source (the SDK error kept as the
//! cause), so `Classified for BackendError` — and the one retry policy — read it.

#[cfg(feature = "sqs")]
use aws_sdk_sqs::config::http::HttpResponse;
#[cfg(feature = "sqs")]
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use gatehouse_domain::error::{Error, Kind, classify_status};
use gatehouse_domain::ports::BackendError;
#[cfg(feature = "pubsub")]
use google_cloud_gax::error::rpc::Code;

/// An SQS error code (JSON protocol `__type` without its namespace, or the query protocol's
/// code) and HTTP status to a [`Kind`]. Codes win; an unknown code falls back to the status.
#[cfg(feature = "sqs")]
pub fn sqs_kind(code: Option<&str>, status: Option<u16>) -> Kind {
    let code = code.map(|c| c.rsplit('#').next().unwrap_or(c));
    match code {
        Some(
            "ThrottlingException"
            | "Throttling"
            | "RequestThrottled"
            | "TooManyRequestsException"
            | "KmsThrottled"
            | "RequestLimitExceeded",
        ) => Kind::Throttled,
        Some(
            "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalError"
            | "InternalFailure"
            | "RequestTimeout"
            | "RequestTimeoutException",
        ) => Kind::Transient,
        Some(
            "AccessDenied"
            | "AccessDeniedException"
            | "InvalidClientTokenId"
            | "UnrecognizedClientException"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidSecurity"
            | "MissingAuthenticationToken"
            | "KmsAccessDenied",
        ) => Kind::Unauthorized,
        Some("QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue") => Kind::NotFound,
        _ => status.map_or(Kind::Permanent, classify_status),
    }
}

/// An SQS SDK failure as a classified [`BackendError`]: `context` says what was being done.
/// No answer at all (dispatch failure, timeout, an unreadable response) is transient.
#[cfg(feature = "sqs")]
pub fn sqs<E>(context: &'static str, e: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, status, what) = match &e {
        SdkError::ServiceError(s) => {
            let status = Some(s.raw().status().as_u16());
            let code = s.err().code();
            (
                sqs_kind(code, status),
                status,
                format!("sqs answered {}", code.unwrap_or("an error")),
            )
        }
        SdkError::ConstructionFailure(_) => {
            (Kind::Permanent, None, "cannot build the sqs request".to_owned())
        }
        _ => (Kind::Transient, None, "no answer from sqs".to_owned()),
    };
    let mut err = Error::new(kind, what).caused_by(e);
    err.status = status;
    BackendError::new(context, err)
}

/// A gRPC status code (Pub/Sub) to a [`Kind`].
#[cfg(feature = "pubsub")]
pub fn grpc_kind(code: Code) -> Kind {
    match code {
        Code::ResourceExhausted => Kind::Throttled,
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Internal | Code::Unknown => {
            Kind::Transient
        }
        Code::Unauthenticated | Code::PermissionDenied => Kind::Unauthorized,
        Code::NotFound => Kind::NotFound,
        Code::AlreadyExists => Kind::Conflict,
        _ => Kind::Permanent,
    }
}

/// A Pub/Sub client failure as a [`Kind`]: the gRPC status when the service answered; a
/// timeout, a connection or transport failure is transient; a credentials failure
/// unauthorized; anything else (a request that cannot be built or an answer that cannot be
/// read) permanent.
#[cfg(feature = "pubsub")]
pub fn pubsub_kind(e: &google_cloud_gax::error::Error) -> Kind {
    if let Some(s) = e.status() {
        grpc_kind(s.code)
    } else if let Some(status) = e.http_status_code() {
        classify_status(status)
    } else if e.is_timeout() || e.is_io() || e.is_connect() || e.is_transport() || e.is_exhausted() {
        Kind::Transient
    } else if e.is_authentication() {
        Kind::Unauthorized
    } else {
        Kind::Permanent
    }
}

/// A Pub/Sub client failure as a classified [`BackendError`].
#[cfg(feature = "pubsub")]
pub fn pubsub(context: &'static str, e: google_cloud_gax::error::Error) -> BackendError {
    let kind = pubsub_kind(&e);
    let what = match e.status() {
        Some(s) => format!("pubsub answered {}", String::from(s.code)),
        None => "pubsub call failed".to_owned(),
    };
    BackendError::new(context, Error::new(kind, what).caused_by(e))
}

/// A failed publish as a classified [`BackendError`]: the RPC's status; a paused ordering key
/// (an earlier message of the key failed) is transient, a shut-down publisher permanent.
#[cfg(feature = "pubsub")]
pub fn pubsub_publish(context: &'static str, e: google_cloud_pubsub::error::PublishError) -> BackendError {
    use google_cloud_pubsub::error::PublishError;
    let (kind, what) = match &e {
        PublishError::Rpc(rpc) => (
            pubsub_kind(rpc),
            match rpc.status() {
                Some(s) => format!("pubsub answered {}", String::from(s.code)),
                None => "pubsub call failed".to_owned(),
            },
        ),
        PublishError::OrderingKeyPaused => (Kind::Transient, "pubsub ordering key paused".to_owned()),
        _ => (Kind::Permanent, "pubsub publisher unavailable".to_owned()),
    };
    BackendError::new(context, Error::new(kind, what).caused_by(e))
}
