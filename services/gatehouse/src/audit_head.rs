//! `gatehouse audit head [--export]` and `gatehouse audit verify --against HEAD` (issue 15).

use anyhow::{Context, bail};
use gatehouse_app::AppError;
use gatehouse_domain::ledger_chain;
use gatehouse_domain::ports::StateStore;
use gatehouse_engine::head_export::{self, ExportedHead, S3Location};
use gatehouse_platform::config::{Config, ConfigError};
use std::io::{Read, Write};

/// `gatehouse audit head [--export]`: print the chain head as one JSON line; `--export` also
/// writes it to the configured sink.
pub async fn head(cfg: &Config, export: bool) -> anyhow::Result<()> {
    let sink = match (export, &cfg.audit.head_export) {
        (true, None) => {
            return Err(AppError::Config(ConfigError::new(
                "audit.head_export",
                "is required for --export (sink = \"file\", \"s3\" or \"log\")",
            ))
            .into());
        }
        (true, Some(s)) => Some(s),
        (false, _) => None,
    };
    let store = crate::ops::state(cfg).await?;
    let head = head_export::current(&store, gatehouse_domain::clock::now()).await;
    store.close().await;
    let Some(head) = head? else {
        bail!("the ledger is empty: there is no chain head to export");
    };
    if let Some(sink) = sink {
        head_export::write(sink, &head).await?;
    }
    writeln!(std::io::stdout().lock(), "{}", serde_json::to_string(&head)?)?;
    Ok(())
}

/// Read an exported head: a file path (the last line counts), `-` for standard input, or
/// `s3://bucket/prefix` (the newest object the `s3` sink wrote there; region and endpoint from
/// `[audit.head_export]` when configured, else the SDK's default chain).
async fn read_exported(cfg: &Config, from: &str) -> anyhow::Result<ExportedHead> {
    let text = if from == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the exported head from stdin")?;
        s
    } else if from.starts_with("s3://") {
        let loc = S3Location::parse(from, cfg.audit.head_export.as_ref())?;
        let (key, head) = head_export::read_s3(&loc.client().await, &loc).await?;
        tracing::info!(bucket = %loc.bucket, key = %key, seq = head.seq, "exported head read from s3");
        return Ok(head);
    } else {
        std::fs::read_to_string(from).with_context(|| format!("cannot read the exported head {from}"))?
    };
    Ok(head_export::parse_exported(&text)?)
}

/// `gatehouse audit verify --against HEAD`: the chain must be intact and still hold the
/// exported seq with the exported hash; exit 1 naming the mismatch.
pub async fn verify_against(cfg: &Config, from: &str) -> anyhow::Result<()> {
    let exported = read_exported(cfg, from).await?;
    let store = crate::ops::state(cfg).await?;
    let rows = store.ledger_since(None).await;
    let head = store.ledger_head().await;
    store.close().await;
    match ledger_chain::verify_against(&rows?, head?.as_ref(), &exported.chain_head()) {
        Ok(ok) => {
            writeln!(
                std::io::stdout().lock(),
                "{ok}; holds the head exported at {} (seq {})",
                exported.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                exported.seq
            )?;
            Ok(())
        }
        Err(broken) => bail!("ledger verification failed: {broken}"),
    }
}
