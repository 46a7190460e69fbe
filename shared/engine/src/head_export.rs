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
use gatehouse_platform::config::{HeadExportConfig, HeadSinkKind, ObjectLockMode};
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
    #[error("cannot {action} s3://{bucket}/{key}: {reason}")]
    S3 {
        action: &'static str,
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("{0}")]
    Parse(String),
}

/// Where the `s3` sink writes, or `verify --against s3://bucket/prefix` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    /// Without leading or trailing `/`.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

impl S3Location {
    /// `s3://bucket/prefix` (the prefix may be empty), with the region and endpoint of `cfg`
    /// (`[audit.head_export]`, when configured).
    pub fn parse(url: &str, cfg: Option<&HeadExportConfig>) -> Result<Self, HeadExportError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| HeadExportError::Parse(format!("{url} is not an s3:// url")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if !gatehouse_platform::config::valid_bucket_name(bucket) {
            return Err(HeadExportError::Parse(format!(
                "{url} does not name a valid s3 bucket"
            )));
        }
        Ok(S3Location {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
            region: cfg.and_then(|c| c.region.clone()),
            endpoint_url: cfg.and_then(|c| c.endpoint_url.clone()),
        })
    }

    fn of(cfg: &HeadExportConfig) -> Self {
        S3Location {
            bucket: cfg.bucket.clone().unwrap_or_default(),
            prefix: cfg.s3_prefix().into(),
            region: cfg.region.clone(),
            endpoint_url: cfg.endpoint_url.clone(),
        }
    }

    /// `<prefix>/<seq>-<time>.json`, seq zero-padded so that keys sort in export order.
    pub fn key_for(&self, head: &ExportedHead) -> String {
        let name = format!("{:020}-{}.json", head.seq, head.time.format("%Y%m%dT%H%M%S%.3fZ"));
        if self.prefix.is_empty() {
            name
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn list_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        }
    }

    fn fail(&self, action: &'static str, key: &str, reason: String) -> HeadExportError {
        HeadExportError::S3 {
            action,
            bucket: self.bucket.clone(),
            key: key.into(),
            reason,
        }
    }

    /// A client from the SDK's default chain (credentials, region) with this location's
    /// overrides; the SDK's own retries are off (the next interval retries a failed export).
    pub async fn client(&self) -> aws_sdk_s3::Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(r) = &self.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let shared = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            // An endpoint override (moto, MinIO) has no per-bucket host names.
            .force_path_style(self.endpoint_url.is_some())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }
}

/// The SDK error's service code and message (never a credential).
fn sdk_reason<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_s3::error::SdkError;
    match e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            match (err.code(), err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => "service error".into(),
            }
        }
        SdkError::TimeoutError(_) => "timed out".into(),
        SdkError::DispatchFailure(_) => "cannot reach s3".into(),
        SdkError::ResponseError(_) => "unreadable response".into(),
        SdkError::ConstructionFailure(_) => "request could not be built".into(),
        _ => "s3 error".into(),
    }
}

/// Write `head` as one new object (`If-None-Match: *`: an existing key is never overwritten);
/// with `retain_days`, under Object Lock until now + `retain_days`. Returns the key.
pub async fn put_s3(
    client: &aws_sdk_s3::Client,
    cfg: &HeadExportConfig,
    head: &ExportedHead,
) -> Result<String, HeadExportError> {
    let loc = S3Location::of(cfg);
    let key = loc.key_for(head);
    let body = serde_json::to_vec(head).map_err(|e| HeadExportError::Parse(e.to_string()))?;
    let mut put = client
        .put_object()
        .bucket(&loc.bucket)
        .key(&key)
        .if_none_match("*")
        .content_type("application/json")
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .body(body.into());
    if let Some(days) = cfg.retain_days {
        let until = gatehouse_domain::clock::now() + chrono::Duration::days(i64::from(days));
        put = put
            .object_lock_mode(match cfg.lock_mode {
                ObjectLockMode::Compliance => aws_sdk_s3::types::ObjectLockMode::Compliance,
                ObjectLockMode::Governance => aws_sdk_s3::types::ObjectLockMode::Governance,
            })
            .object_lock_retain_until_date(aws_sdk_s3::primitives::DateTime::from_millis(
                until.timestamp_millis(),
            ));
    }
    put.send()
        .await
        .map_err(|e| loc.fail("write", &key, sdk_reason(&e)))?;
    Ok(key)
}

/// The newest exported head under `loc` (every page of ListObjectsV2; the highest seq, then
/// the latest time, wins), with its key.
pub async fn read_s3(
    client: &aws_sdk_s3::Client,
    loc: &S3Location,
) -> Result<(String, ExportedHead), HeadExportError> {
    let list_prefix = loc.list_prefix();
    let mut pages = client
        .list_objects_v2()
        .bucket(&loc.bucket)
        .prefix(&list_prefix)
        .into_paginator()
        .send();
    let mut newest: Option<((i64, String), String)> = None;
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| loc.fail("list", &list_prefix, sdk_reason(&e)))?;
        for key in page.contents().iter().filter_map(|o| o.key()) {
            let Some(order) = key_order(&key[list_prefix.len().min(key.len())..]) else {
                continue;
            };
            if newest.as_ref().is_none_or(|(o, _)| order > *o) {
                newest = Some((order, key.to_string()));
            }
        }
    }
    let Some((_, key)) = newest else {
        return Err(HeadExportError::Parse(format!(
            "no exported head under s3://{}/{list_prefix}",
            loc.bucket
        )));
    };
    let obj = client
        .get_object()
        .bucket(&loc.bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| loc.fail("read", &key, sdk_reason(&e)))?;
    let bytes = obj
        .body
        .collect()
        .await
        .map_err(|e| loc.fail("read", &key, e.to_string()))?
        .into_bytes();
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| HeadExportError::Parse(format!("s3://{}/{key} is not utf-8", loc.bucket)))?;
    Ok((key.clone(), parse_exported(text)?))
}

/// `<seq>-<time>.json` directly under the prefix → (seq, time) for ordering; other keys: `None`.
fn key_order(name: &str) -> Option<(i64, String)> {
    let stem = name.strip_suffix(".json")?;
    let (seq, time) = stem.split_once('-')?;
    if name.contains('/') || seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, time.to_string()))
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
pub async fn write(cfg: &HeadExportConfig, head: &ExportedHead) -> Result<(), HeadExportError> {
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
        HeadSinkKind::S3 => {
            let client = S3Location::of(cfg).client().await;
            let key = put_s3(&client, cfg, head).await?;
            tracing::debug!(seq = head.seq, key = %key, "ledger chain head written to s3");
            Ok(())
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
    let Some(head) = current(store, gatehouse_domain::clock::now()).await? else {
        return Ok(None);
    };
    write(cfg, &head).await?;
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
                gatehouse_platform::events::head_export_failed(&e);
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

    #[tokio::test]
    async fn the_file_sink_appends_one_line_per_export_and_the_last_one_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heads.jsonl");
        let cfg = HeadExportConfig {
            sink: HeadSinkKind::File,
            path: Some(path.clone()),
            interval: std::time::Duration::from_secs(60),
            bucket: None,
            prefix: None,
            region: None,
            endpoint_url: None,
            retain_days: None,
            lock_mode: ObjectLockMode::Compliance,
        };
        write(&cfg, &head(3)).await.unwrap();
        write(&cfg, &head(9)).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["seq"], 3);
        assert_eq!(first["hash"], format!("{:064x}", 3));
        assert!(first["time"].as_str().unwrap().starts_with("2023-11-14T22:13:20"));
        assert_eq!(parse_exported(&text).unwrap(), head(9));
    }

    #[test]
    fn s3_keys_sort_by_seq_and_only_exported_heads_count() {
        let loc = S3Location::parse("s3://audit-heads/a/b/", None).unwrap();
        assert_eq!(loc.bucket, "audit-heads");
        assert_eq!(loc.prefix, "a/b");
        let key = loc.key_for(&head(42));
        assert_eq!(key, "a/b/00000000000000000042-20231114T221320.042Z.json");
        assert_eq!(
            key_order("00000000000000000042-20231114T221320.042Z.json"),
            Some((42, "20231114T221320.042Z".into()))
        );
        assert!(key_order("9-x.json") < key_order("10-x.json"));
        assert_eq!(key_order("notes.txt"), None);
        assert_eq!(key_order("sub/1-x.json"), None);
        assert!(S3Location::parse("s3://B/x", None).is_err());
        assert!(S3Location::parse("/tmp/x", None).is_err());
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
