//! `gatehouse-rotator`: rotates the declared secrets (`[rotator]`). Thin: parses arguments, the
//! rest is `gatehouse_runtime::app::rotator_main`.

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
    gatehouse_runtime::app::rotator_main(cli.config.as_deref()).await
}
