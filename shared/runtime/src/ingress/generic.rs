//! generic intake (being written).

use super::Deps;
use axum::Router;
use gatehouse_domain::ports::QueueProducer;

pub fn router<Q: QueueProducer + Clone + 'static>(_deps: &Deps<Q>) -> Router {
    Router::new()
}
