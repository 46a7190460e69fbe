//! `gatehouse-ingress`: verifies webhooks and durably enqueues them. Thin: parses arguments, the
//! rest is `gatehouse_intake::service` (no engine, no target client is linked).

use clap::Parser;
use gatehouse_intake::service::service_main;
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
    service_main("gatehouse-ingress", cli.config.as_deref()).await
}
