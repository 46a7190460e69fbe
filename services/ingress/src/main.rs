//! `gatehouse-ingress`: verifies webhooks and durably enqueues them. Thin: parses arguments, the rest is `gatehouse_runtime::app`.

// The engine's per-event future (reads, breaker, applies across Looker, AWS, GCP and the
// store) nests deeper than rustc's default query depth (128) when release codegen computes
// its layout ("queries overflow the depth limit"); debug builds never compute it.
#![recursion_limit = "256"]

use clap::Parser;
use gatehouse_runtime::app::{Components, service_main};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "gatehouse-ingress", version, about = "Gatehouse webhook intake")]
struct Cli {
    /// TOML configuration file (GATEHOUSE_* variables override it).
    #[arg(long, short, env = "GATEHOUSE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    service_main(
        "gatehouse-ingress",
        cli.config.as_deref(),
        Components {
            ingress: true,
            processor: false,
        },
    )
    .await
}
