//! Okta Event Hooks at `/hooks/okta`.

use super::{Deps, error};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gatehouse_domain::okta;
use gatehouse_domain::ports::QueueProducer;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;

struct IngressConfig {
    okta_secret: Option<SecretString>,
    /// The org the secret belongs to: namespaces envelope ids.
    org: String,
    max_body_bytes: usize,
}

struct Ingress<Q> {
    queue: Q,
    cfg: IngressConfig,
    /// Adds the profile attributes the policy names (`okta_import`), when configured.
    enricher: Option<Arc<super::okta_import::Enricher>>,
}

pub fn router<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Router {
    let cfg = IngressConfig {
        okta_secret: deps.config.okta.hook_secret.clone(),
        org: deps.config.okta.org.clone(),
        max_body_bytes: deps.config.okta.max_body_bytes,
    };
    let state = Arc::new(Ingress {
        queue: deps.queue.clone(),
        cfg,
        enricher: super::okta_import::enricher_of_config(&deps.config),
    });
    Router::new()
        .route("/hooks/okta", get(okta_verify::<Q>).post(okta_hook::<Q>))
        .with_state(state)
}

impl<Q> Ingress<Q> {
    /// Constant-time check of Okta's shared secret (sent verbatim in `Authorization`); `Some` is
    /// the rejection to send.
    fn reject_unauthorized(&self, headers: &HeaderMap) -> Option<Response> {
        let Some(secret) = &self.cfg.okta_secret else {
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_configured",
                "no okta hook secret is configured (okta.hook_secret or GATEHOUSE_OKTA_HOOK_SECRET)",
            ));
        };
        let given = headers
            .get("authorization")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        // An absent or empty header never authenticates: not even against an empty secret
        // (`Config::load` refuses one; this holds whatever built the router).
        let matches = bool::from(given.ct_eq(secret.expose_secret().as_bytes()));
        if matches && !given.is_empty() {
            None
        } else {
            super::count_rejection("okta", "unauthorized");
            Some(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong Authorization header",
            ))
        }
    }
}

async fn okta_verify<Q>(State(ing): State<Arc<Ingress<Q>>>, headers: HeaderMap) -> Response {
    if let Some(r) = ing.reject_unauthorized(&headers) {
        return r;
    }
    match headers
        .get("x-okta-verification-challenge")
        .and_then(|v| v.to_str().ok())
    {
        Some(challenge) => Json(okta::verification_response(challenge)).into_response(),
        None => error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "missing x-okta-verification-challenge header",
        ),
    }
}

async fn okta_hook<Q: QueueProducer>(
    State(ing): State<Arc<Ingress<Q>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(r) = ing.reject_unauthorized(&headers) {
        return r;
    }
    let bytes = match super::read_body("okta", &headers, body, ing.cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let mut envelopes = match okta::parse_hook_body(&ing.cfg.org, &bytes, gatehouse_domain::clock::now()) {
        Ok(e) => e,
        Err(e) => {
            super::count_rejection("okta", "malformed");
            return error(StatusCode::BAD_REQUEST, "bad_request", e.to_string());
        }
    };
    if let Err(r) = super::check_emails("okta", &envelopes) {
        return *r;
    }
    if let Some(enricher) = &ing.enricher {
        enricher.enrich(&mut envelopes).await;
    }
    super::trace_envelopes(&mut envelopes);
    if let Err(e) = ing.queue.publish(&envelopes).await {
        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "enqueue failed; okta will retry");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "enqueue_failed",
            "the event could not be stored; retry",
        );
    }
    let mut ignored = 0;
    for env in &envelopes {
        let actionable = env.event.is_actionable();
        ignored += usize::from(!actionable);
        super::count_received("okta", env);
        tracing::debug!(
            envelope_id = %env.id, subject = %env.subject.key, event_type = %env.source_event_type,
            actionable, "event enqueued"
        );
    }
    super::record_accepted(envelopes.len());
    Json(json!({ "enqueued": envelopes.len(), "ignored": ignored })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::test_support::{MemQueue, send};
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
