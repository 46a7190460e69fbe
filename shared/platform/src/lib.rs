//! What every Gatehouse service shares: configuration, telemetry, the shutdown signal and the
//! `/healthz`, `/readyz`, `/metrics` router.

pub mod config;
pub mod ops;
pub mod shutdown;
pub mod telemetry;
