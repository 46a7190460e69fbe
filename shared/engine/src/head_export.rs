//! Chain head export (issue 15): the ledger's last seq and hash, written on a schedule to a
//! place the database's owner cannot rewrite (`[audit.head_export]`), and read back by
//! `gatehouse audit verify --against`.
//!
//! The hash chain alone shows a row altered, removed or reordered — unless whoever holds the
//! database recomputes every hash after the change (and the chain head). An exported head
//! defeats that: the rewritten ledger no longer has the exported seq with the exported hash.

use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_domain::ledger_chain::ChainHead;
use gatehouse_domain::ports::{BackendError, StateStore};
use gatehouse_platform::config::{HeadExportConfig, HeadSinkKind};
use gatehouse_platform::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// One exported chain head: one JSON line of the `file` sink, the fields of the `log` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedHead {
    pub seq: i64,
    pub hash: String,
    /// When it was exported.
    pub time: DateTime<Utc>,
}

impl ExportedHead {
    pub fn chain_head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeadExportError {
    #[error(transparent)]
    Store(#[from] BackendError),
    #[error("cannot append the chain head to {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
}

/// The store's chain head now (`None`: an empty ledger).
pub async fn current<S: StateStore>(
    store: &S,
    now: DateTime<Utc>,
) -> Result<Option<ExportedHead>, BackendError> {
    Ok(store.ledger_head().await?.map(|h| ExportedHead {
        seq: h.seq,
        hash: h.hash,
        time: now,
    }))
}

/// Write `head` to the configured sink.
pub fn write(cfg: &HeadExportConfig, head: &ExportedHead) -> Result<(), HeadExportError> {
    match cfg.sink {
        HeadSinkKind::Log => {
            tracing::info!(
                seq = head.seq,
                hash = %head.hash,
                time = %head.time.to_rfc3339_opts(SecondsFormat::Millis, true),
                "ledger chain head"
            );
            Ok(())
        }
        HeadSinkKind::File => {
            let path = cfg.path.as_deref().unwrap_or(Path::new("ledger-heads.jsonl"));
            append_line(path, head)
        }
    }
}

/// Append one JSON line (opened append-only: earlier lines are never rewritten).
fn append_line(path: &Path, head: &ExportedHead) -> Result<(), HeadExportError> {
    let fail = |source| HeadExportError::File {
        path: path.display().to_string(),
        source,
    };
    let mut line = serde_json::to_string(head).map_err(|e| HeadExportError::Parse(e.to_string()))?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(fail)?;
    f.write_all(line.as_bytes()).map_err(fail)?;
    f.sync_data().map_err(fail)
}

/// Export the store's head to the sink once (nothing for an empty ledger).
pub async fn export_once<S: StateStore>(
    store: &S,
    cfg: &HeadExportConfig,
) -> Result<Option<ExportedHead>, HeadExportError> {
    let Some(head) = current(store, Utc::now()).await? else {
        return Ok(None);
    };
    write(cfg, &head)?;
    Ok(Some(head))
}

/// The exported head to check against: the last non-empty line of `text` (a `file` sink's
/// content, or one exported head), as JSON `{"seq", "hash", "time"}`.
pub fn parse_exported(text: &str) -> Result<ExportedHead, HeadExportError> {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| HeadExportError::Parse("the exported head is empty".into()))?;
    let head: ExportedHead = serde_json::from_str(line.trim())
        .map_err(|e| HeadExportError::Parse(format!("the exported head is not valid: {e}")))?;
    if head.seq < 1 || head.hash.len() != 64 || !head.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HeadExportError::Parse(
            "the exported head is not valid: seq must be at least 1 and hash 64 hex digits".into(),
        ));
    }
    Ok(head)
}

/// Export the head every `cfg.interval` until `shutdown` (the first export right away). A
/// failed export is logged and retried at the next interval.
pub async fn run<S: StateStore>(store: S, cfg: HeadExportConfig, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        match export_once(&store, &cfg).await {
            Ok(Some(h)) => tracing::debug!(seq = h.seq, "ledger chain head exported"),
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("gatehouse_head_export_failures_total").increment(1);
                tracing::error!(error = %e, "cannot export the ledger chain head");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(seq: i64) -> ExportedHead {
        ExportedHead {
            seq,
            hash: format!("{seq:064x}"),
            time: DateTime::from_timestamp_millis(1_700_000_000_000 + seq).unwrap(),
        }
    }

    #[test]
    fn the_file_sink_appends_one_line_per_export_and_the_last_one_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heads.jsonl");
        let cfg = HeadExportConfig {
            sink: HeadSinkKind::File,
            path: Some(path.clone()),
            interval: std::time::Duration::from_secs(60),
        };
        write(&cfg, &head(3)).unwrap();
        write(&cfg, &head(9)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["seq"], 3);
        assert_eq!(first["hash"], format!("{:064x}", 3));
        assert!(first["time"].as_str().unwrap().starts_with("2023-11-14T22:13:20"));
        assert_eq!(parse_exported(&text).unwrap(), head(9));
    }

    #[test]
    fn a_bad_exported_head_is_refused_with_a_reason() {
        assert!(parse_exported("").unwrap_err().to_string().contains("empty"));
        assert!(
            parse_exported("{\"seq\":1}")
                .unwrap_err()
                .to_string()
                .contains("not valid")
        );
        let bad_hash = r#"{"seq":1,"hash":"xyz","time":"2026-01-01T00:00:00Z"}"#;
        assert!(
            parse_exported(bad_hash)
                .unwrap_err()
                .to_string()
                .contains("64 hex")
        );
    }
}
