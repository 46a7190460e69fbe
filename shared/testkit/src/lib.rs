//! Test kit for Gatehouse (dev-dependency only): fakes of the outside world that tests and the
//! bench run on loopback.
//!
//! * [`looker_fake`]: a stateful fake of the Looker API 4.0 (`FakeLooker`).
//! * [`oracle`]: what Looker must hold after a set of events, computed from the events alone, and
//!   the "no write applied twice" check (the crash, replica and soak tests' one definition).
//! * [`progress`]: a deadline on progress (counters reaching new highs), not on total time.
//! * [`postgres`]: a fresh database per test on the throwaway PostgreSQL cluster.
//! * [`gcp_iam_fake`]: getIamPolicy/setIamPolicy of Resource Manager v3, BigQuery and IAM v1.
//! * [`secret_manager_fake`], [`gcp_sa_keys_fake`]: GCP Secret Manager and service-account keys.
//! * [`okta_fake`]: the Okta System Log and Users/Groups APIs (`FakeOkta`: SSWS, `next` links, 429).
//! * [`otlp_fake`]: an OpenTelemetry collector's OTLP/HTTP traces receiver (`FakeCollector`).
//! * [`fault_proxy`]: a TCP proxy that drops and stalls connections (between Gatehouse and a queue).
//! * [`logs`]: `LogBuffer`, what a tracing subscriber writes, for a test to read.
//! * [`fuzz`]: proptest generators for fuzzing parsers of outside input (bytes, JSON, mutations).

pub mod cloud_identity_fake;
pub mod fault_proxy;
pub mod fuzz;
pub mod gcp_iam_fake;
pub mod gcp_sa_keys_fake;
pub mod google_reports_fake;
pub mod graph_fake;
pub mod logs;
pub mod looker_fake;
pub mod okta_fake;
pub mod oracle;
pub mod otlp_fake;
pub mod postgres;
pub mod progress;
pub mod secret_manager_fake;
mod server;
pub mod sso_admin_fake;

pub use looker_fake::{FakeLooker, RecordedCall, UserView};
pub use okta_fake::FakeOkta;
pub use otlp_fake::{FakeCollector, ReceivedSpan};
