//! `gatehouse-ingress`: verifies webhooks and durably enqueues them. Thin: parses config, wires.

use clap::Parser;
use gatehouse_platform::config::Config;
use gatehouse_runtime::app::{self, Components};
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
    let cfg = match Config::load(cli.config.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse-ingress: {e}");
            return ExitCode::from(64);
        }
    };
    gatehouse_platform::telemetry::init_logging(&cfg.log);
    match app::start(
        &cfg,
        Components {
            ingress: true,
            processor: false,
        },
    )
    .await
    {
        Ok(running) => {
            running.until(gatehouse_platform::shutdown::os_signal()).await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse-ingress: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
