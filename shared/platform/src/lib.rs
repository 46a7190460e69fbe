//! What every Gatehouse service shares: configuration, telemetry, the shutdown signal and the
//! admin router (`/healthz`, `/readyz`, `/metrics`).

pub mod clock;
pub mod config;
pub mod events;
pub mod http;
pub mod ops;
pub mod retry;
pub mod service;
pub mod shutdown;
pub mod telemetry;
