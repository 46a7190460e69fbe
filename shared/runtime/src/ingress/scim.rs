//! scim intake (being written).

use super::Deps;
use axum::Router;
use gatehouse_domain::ports::QueueProducer;
use gatehouse_platform::shutdown::Shutdown;
use tokio::task::JoinHandle;

pub fn spawn_tasks<Q: QueueProducer + Clone + 'static>(
    _deps: &Deps<Q>,
    _shutdown: &Shutdown,
) -> Vec<JoinHandle<()>> {
    Vec::new()
}

pub fn router<Q: QueueProducer + Clone + 'static>(_deps: &Deps<Q>) -> Router {
    Router::new()
}
