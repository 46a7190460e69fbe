//! `gatehouse-rotator`: rotates the declared secrets (`[rotator]`). Thin: parses arguments, the
//! rest is `gatehouse_engine::app::rotator_main`.

// The engine's per-event future (reads, breaker, applies across Looker, AWS, GCP and the
// store) nests deeper than rustc's default query depth (128) when release codegen computes
// its layout ("queries overflow the depth limit"); debug builds never compute it.
#![recursion_limit = "256"]

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "gatehouse-rotator", version, about = "Gatehouse secret rotator")]
struct Cli {
    /// TOML configuration file (GATEHOUSE_* variables override it).
    #[arg(long, short, env = "GATEHOUSE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    gatehouse_engine::app::rotator_main(cli.config.as_deref()).await
}
