//! The loopback HTTP server every fake runs on: bind `127.0.0.1:0`, serve an axum router, stop
//! when the last handle of the fake is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The fake's server task; aborted when the last clone of the fake goes.
pub(crate) struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bind `127.0.0.1:0`. Panics (naming `what`) if loopback cannot be bound: a test-only helper.
pub(crate) async fn bind(what: &str) -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot bind 127.0.0.1:0: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{what}: no local addr: {e}"));
    (listener, addr)
}

/// Serve `app` on `listener` until the returned task is dropped.
pub(crate) fn spawn(what: &'static str, listener: TcpListener, app: axum::Router) -> Arc<ServerTask> {
    Arc::new(ServerTask(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("{what}: server stopped: {e}");
        }
    })))
}
