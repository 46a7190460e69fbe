//! The one `main` every service binary runs: load the configuration (exit 64 naming the field),
//! start logging and traces, run the service, turn its outcome into the process's exit code, and
//! flush telemetry on the way out.

use crate::config::Config;
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

/// An error a service can stop with: its message is printed once, to stderr, and
/// [`Stop::exit_code`] becomes the process's exit code (64, EX_USAGE, for bad configuration).
pub trait Stop: std::fmt::Display {
    fn exit_code(&self) -> i32;
}

/// Run the service `name` with the configuration at `config` (or the environment alone).
pub async fn main<F, Fut, E>(name: &str, config: Option<&Path>, run: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Stop,
{
    let cfg = match Config::load(config, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(64);
        }
    };
    let telemetry = match crate::telemetry::init(&cfg.log, &cfg.telemetry, name) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    };
    telemetry.shutdown().await;
    code
}
