//! Okta Event Hooks at `/hooks/okta`.

use super::pipeline::{self, Intake as _, Pipeline, Queue, Refusal, Request, Verified};
use super::{Deps, error};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::okta;
use gatehouse_domain::ports::QueueProducer;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The Okta Event Hook as an [`pipeline::Intake`].
pub struct OktaIntake {
    okta_secret: Option<SecretString>,
    /// The org the secret belongs to: namespaces envelope ids.
    org: String,
    max_body_bytes: usize,
    /// Adds the profile attributes the policy names (`okta_import`), when configured.
    enricher: Option<Arc<super::okta_import::Enricher>>,
}

impl OktaIntake {
    pub fn new(okta_secret: Option<SecretString>, org: String, max_body_bytes: usize) -> OktaIntake {
        OktaIntake {
            okta_secret,
            org,
            max_body_bytes,
            enricher: None,
        }
    }

    /// Constant-time check of Okta's shared secret (sent verbatim in `Authorization`).
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let secret = self
            .okta_secret
            .as_ref()
            .map(|s| s.expose_secret().as_bytes())
            .unwrap_or_default();
        let given = headers
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // An absent or empty header never authenticates: not even against an empty secret
        // (`Config::load` refuses one; this holds whatever built the router).
        let matches = bool::from(given.ct_eq(secret));
        if matches && !given.is_empty() {
            Ok(())
        } else {
            Err(Refusal::unauthorized("missing or wrong Authorization header"))
        }
    }
}

impl pipeline::Intake for OktaIntake {
    const SOURCE: &'static str = "okta";
    /// The shared secret is a header: refused before the body is read.
    const BODY_SIGNED: bool = false;
    type Proof = ();
    type Item = Envelope;

    fn not_configured(&self) -> Option<&'static str> {
        self.okta_secret
            .is_none()
            .then_some("no okta hook secret is configured (okta.hook_secret or GATEHOUSE_OKTA_HOOK_SECRET)")
    }
    fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }
    async fn verify(&self, headers: &HeaderMap, _: &Bytes, _: DateTime<Utc>) -> Result<(), Refusal> {
        self.authenticate(headers)
    }
    fn normalize(
        &self,
        request: &Verified<Request<()>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Envelope>, Refusal> {
        okta::parse_hook_body(&self.org, request.body(), now).map_err(|e| Refusal::malformed(e.to_string()))
    }
    async fn enrich(&self, _: &Verified<Request<()>>, items: &mut Vec<Envelope>) -> Result<(), Refusal> {
        if let Some(enricher) = &self.enricher {
            enricher.enrich(items).await;
        }
        Ok(())
    }
    fn respond(&self, _: &Verified<Request<()>>, batch: &Verified<Vec<Envelope>>, _: u64) -> Response {
        pipeline::enqueued_and_ignored(batch)
    }
}

type State_<Q> = Arc<Pipeline<OktaIntake, Queue<Q>>>;

pub fn router<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Router {
    let mut intake = OktaIntake::new(
        deps.config.okta.hook_secret.clone(),
        deps.config.okta.org.clone(),
        deps.config.okta.max_body_bytes,
    );
    intake.enricher = super::okta_import::enricher_of_config(&deps.config);
    Router::new()
        .route(
            "/hooks/okta",
            get(okta_verify::<Q>).post(pipeline::handle::<OktaIntake, Queue<Q>>),
        )
        .with_state(Pipeline::new(intake, Queue(deps.queue.clone())))
}

/// Okta's one-time verification challenge (`GET`, outside the pipeline: no event is read).
async fn okta_verify<Q: QueueProducer + 'static>(State(p): State<State_<Q>>, headers: HeaderMap) -> Response {
    if let Some(detail) = p.intake().not_configured() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_configured", detail);
    }
    if let Err(refusal) = p.intake().authenticate(&headers) {
        return refusal.answer(OktaIntake::SOURCE);
    }
    match headers
        .get("x-okta-verification-challenge")
        .and_then(|v| v.to_str().ok())
    {
        Some(challenge) => axum::Json(okta::verification_response(challenge)).into_response(),
        None => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing x-okta-verification-challenge header",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::test_support::{MemQueue, send};
    use axum::body::Body;
    use axum::http::Request;
    use gatehouse_platform::config::Config;
    use gatehouse_store::sqlite::Sqlite;

    const BODY: &[u8] = include_bytes!(
        "../../../../../shared/fixtures/okta/event-hook.user.lifecycle.deactivate.constructed.json"
    );

    async fn app(secret: &str, queue: MemQueue, dir: &std::path::Path) -> Router {
        // Built around `Config::load`, which refuses an empty secret: the router must hold
        // on its own (defence in depth).
        let mut config = Config::defaults();
        config.okta.hook_secret = Some(SecretString::from(secret.to_string()));
        let store = Sqlite::open(dir).await.unwrap();
        router(&Deps {
            queue,
            store: store.clone(),
            state: gatehouse_store::state::AnyState::Sqlite(store),
            config: Arc::new(config),
        })
    }

    fn post(authorization: Option<&str>) -> Request<Body> {
        let mut r = Request::post("/hooks/okta").header("content-type", "application/json");
        if let Some(a) = authorization {
            r = r.header("authorization", a);
        }
        r.body(Body::from(BODY)).unwrap()
    }

    /// Issue 11, finding 1: with an empty configured secret, a POST without `Authorization`
    /// planned an offboarding. A missing or empty header is 401 whatever the configuration.
    #[tokio::test]
    async fn a_missing_or_empty_authorization_is_401_whatever_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        for secret in ["", "okta-hook-s3cret-0123456789"] {
            for header in [None, Some("")] {
                let q = MemQueue::default();
                let (status, body) = send(app(secret, q.clone(), dir.path()).await, post(header)).await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "secret {secret:?}, header {header:?}: {body}"
                );
                assert!(q.published.lock().unwrap().is_empty(), "nothing is enqueued");
            }
        }
        let q = MemQueue::default();
        let (status, body) = send(
            app("okta-hook-s3cret-0123456789", q.clone(), dir.path()).await,
            post(Some("okta-hook-s3cret-0123456789")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(q.published.lock().unwrap().len(), 1);
    }
}
