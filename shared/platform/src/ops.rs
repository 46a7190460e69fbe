//! The admin surface: `/healthz`, `/readyz` and `/metrics`, served by every service on its admin
//! listener (`admin_listen`), never on the intake port. The intake port answers `/healthz` only
//! ([`liveness_router`]): a constant `ok` that tells an attacker nothing.

use crate::telemetry::metrics_handle;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Answers whether the service can do its work now (e.g. its database answers).
pub type ReadyCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// `/healthz` alone, for the intake listener (liveness probes and load balancers).
pub fn liveness_router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}

/// The admin listener's routes: `/healthz`, `/readyz` and `/metrics`.
pub fn router(ready: ReadyCheck) -> Router {
    let handle = metrics_handle();
    liveness_router()
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready().await {
                        (StatusCode::OK, "ready\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    handle.run_upkeep();
                    ([("content-type", "text/plain; version=0.0.4")], handle.render())
                }
            }),
        )
}
