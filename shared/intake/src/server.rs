//! The HTTP listeners (intake and admin): hyper's HTTP/1 server with a header-read timeout, a
//! request timeout (tower-http) and a cap on open connections. `axum::serve` sets none of these
//! (hyper's header timeout needs a timer it does not give), so a client dripping a header byte
//! every few seconds, or opening connections and never writing, held them for ever.

use axum::Router;
use axum::http::StatusCode;
use gatehouse_platform::config::ServerConfig;
use gatehouse_platform::shutdown::Shutdown;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower_http::timeout::TimeoutLayer;

/// What bounds one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    /// The intake listener's limits.
    pub fn intake(s: &ServerConfig) -> Self {
        Limits {
            header_read_timeout: s.header_read_timeout,
            request_timeout: s.request_timeout,
            max_connections: s.max_connections,
        }
    }

    /// The admin listener: the same timeouts, few connections (a scraper and probes).
    pub fn admin(s: &ServerConfig) -> Self {
        Limits {
            max_connections: 64,
            ..Limits::intake(s)
        }
    }
}

/// Serve `app` on `listener` until `shutdown`, then let in-flight requests finish. `name`
/// (`intake` or `admin`) labels logs and `gatehouse_http_connections_refused_total`.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: Shutdown,
) {
    let app = app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            gatehouse_platform::events::http_connection_refused(name, &peer, limits.max_connections);
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.wait() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(listener = name, %peer, error = %e, "connection closed with an error");
            }
        });
    }
    while conns.join_next().await.is_some() {}
}
