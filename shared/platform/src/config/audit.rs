//! `[audit]`: where the ledger's chain head is exported (issue 15), out of reach of whoever
//! owns the database: with an exported head, `gatehouse audit verify --against` sees a ledger
//! rewritten and re-hashed wholesale.

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `[audit.head_export]`: off when absent.
    #[serde(default)]
    pub head_export: Option<HeadExportConfig>,
}

/// `[audit.head_export]`: `sink = "file"` (with `path`), `"s3"` (with `bucket`) or `"log"`,
/// every `interval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadExportConfig {
    pub sink: HeadSinkKind,
    /// `sink = "file"`: the JSON-lines file each export appends one line to (keep it on storage
    /// the database's owner cannot rewrite: another host, an append-only mount, a WORM volume).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `sink = "s3"`: the bucket each export writes one new object to (create it with Object
    /// Lock enabled so that not even the bucket's owner can delete a head before `retain_days`).
    #[serde(default)]
    pub bucket: Option<String>,
    /// `sink = "s3"`: the key prefix; objects are `<prefix>/<seq>-<time>.json`. Default
    /// `gatehouse/ledger-heads`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// `sink = "s3"`: the bucket's region (default: the SDK's chain, `AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// `sink = "s3"`: an S3-compatible endpoint (tests: moto); path-style addressing.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// `sink = "s3"`: Object Lock retention of each exported head, in days (the bucket must
    /// have Object Lock enabled). Absent: no retention is requested on the object.
    #[serde(default)]
    pub retain_days: Option<u32>,
    /// `sink = "s3"`: the Object Lock mode with `retain_days`: `compliance` (default: nobody,
    /// not even the root account, can shorten or remove it) or `governance`.
    #[serde(default)]
    pub lock_mode: ObjectLockMode,
    /// How often the processor (or standalone) exports the head; default 1h.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
}

/// Where the head goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadSinkKind {
    /// Append one JSON line (`seq`, `hash`, `time`) to `path`.
    File,
    /// Write one new object `<prefix>/<seq>-<time>.json` to `bucket` (never overwritten).
    S3,
    /// One structured INFO log line (`ledger chain head`), for a log pipeline the database's
    /// owner does not control.
    Log,
}

/// `lock_mode` of the `s3` sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectLockMode {
    #[default]
    Compliance,
    Governance,
}

/// The `s3` sink's default key prefix.
pub const DEFAULT_HEAD_PREFIX: &str = "gatehouse/ledger-heads";

impl HeadExportConfig {
    /// The `s3` sink's key prefix, without leading or trailing `/`.
    pub fn s3_prefix(&self) -> &str {
        self.prefix
            .as_deref()
            .unwrap_or(DEFAULT_HEAD_PREFIX)
            .trim_matches('/')
    }
}

/// S3 bucket naming rules (3-63 of lowercase letters, digits, `.` and `-`, starting and ending
/// with a letter or digit).
pub fn valid_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn default_interval() -> Duration {
    Duration::from_secs(3600)
}

impl AuditConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let Some(h) = &self.head_export else {
            return Ok(());
        };
        if h.sink == HeadSinkKind::File && h.path.is_none() {
            return Err(ConfigError::new(
                "audit.head_export.path",
                "is required when sink = \"file\"",
            ));
        }
        if h.sink == HeadSinkKind::S3 {
            match h.bucket.as_deref() {
                None => {
                    return Err(ConfigError::new(
                        "audit.head_export.bucket",
                        "is required when sink = \"s3\"",
                    ));
                }
                Some(b) if !valid_bucket_name(b) => {
                    return Err(ConfigError::new(
                        "audit.head_export.bucket",
                        "is not a valid s3 bucket name (3-63 of a-z, 0-9, '.', '-')",
                    ));
                }
                Some(_) => {}
            }
            if h.s3_prefix().is_empty() || h.s3_prefix().len() > 512 {
                return Err(ConfigError::new(
                    "audit.head_export.prefix",
                    "must not be empty and at most 512 characters",
                ));
            }
            if let Some(u) = &h.endpoint_url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return Err(ConfigError::new(
                    "audit.head_export.endpoint_url",
                    "must be an http:// or https:// url",
                ));
            }
            if matches!(&h.region, Some(r) if r.trim().is_empty()) {
                return Err(ConfigError::new("audit.head_export.region", "must not be empty"));
            }
            if let Some(d) = h.retain_days
                && !(1..=36_500).contains(&d)
            {
                return Err(ConfigError::new(
                    "audit.head_export.retain_days",
                    "must be between 1 and 36500",
                ));
            }
        } else {
            let s3_only = [
                ("bucket", h.bucket.is_some()),
                ("prefix", h.prefix.is_some()),
                ("region", h.region.is_some()),
                ("endpoint_url", h.endpoint_url.is_some()),
                ("retain_days", h.retain_days.is_some()),
            ];
            if let Some((name, _)) = s3_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::new(
                    format!("audit.head_export.{name}"),
                    "only applies to sink = \"s3\"",
                ));
            }
        }
        if h.interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "audit.head_export.interval",
                "must be at least 1s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> AuditConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_file_sink_needs_a_path_and_the_interval_defaults_to_an_hour() {
        let ok = parse("[head_export]\nsink = \"file\"\npath = \"/var/log/heads.jsonl\"\n");
        ok.validate().unwrap();
        assert_eq!(ok.head_export.unwrap().interval, Duration::from_secs(3600));
        let e = parse("[head_export]\nsink = \"file\"\n").validate().unwrap_err();
        assert_eq!(e.field, "audit.head_export.path");
        let log = parse("[head_export]\nsink = \"log\"\ninterval = \"5m\"\n");
        log.validate().unwrap();
        assert_eq!(log.head_export.unwrap().interval, Duration::from_secs(300));
        assert!(toml::from_str::<AuditConfig>("[head_export]\nsink = \"ftp\"\n").is_err());
        assert!(parse("").head_export.is_none());
    }

    #[test]
    fn an_s3_sink_needs_a_valid_bucket_and_sane_retention() {
        let ok = parse(
            "[head_export]\nsink = \"s3\"\nbucket = \"audit-heads\"\nretain_days = 400\nlock_mode = \"governance\"\n",
        );
        ok.validate().unwrap();
        let h = ok.head_export.unwrap();
        assert_eq!(h.s3_prefix(), DEFAULT_HEAD_PREFIX);
        assert_eq!(h.lock_mode, ObjectLockMode::Governance);
        let field = |t: &str| parse(t).validate().unwrap_err().field;
        assert_eq!(
            field("[head_export]\nsink = \"s3\"\n"),
            "audit.head_export.bucket"
        );
        assert_eq!(
            field("[head_export]\nsink = \"s3\"\nbucket = \"Bad_Bucket\"\n"),
            "audit.head_export.bucket"
        );
        assert_eq!(
            field("[head_export]\nsink = \"s3\"\nbucket = \"b-1\"\nprefix = \"/\"\n"),
            "audit.head_export.prefix"
        );
        assert_eq!(
            field("[head_export]\nsink = \"s3\"\nbucket = \"b-1\"\nretain_days = 0\n"),
            "audit.head_export.retain_days"
        );
        assert_eq!(
            field("[head_export]\nsink = \"s3\"\nbucket = \"b-1\"\nendpoint_url = \"localhost:5000\"\n"),
            "audit.head_export.endpoint_url"
        );
        assert_eq!(
            field("[head_export]\nsink = \"log\"\nbucket = \"b-1\"\n"),
            "audit.head_export.bucket"
        );
        assert!(
            toml::from_str::<AuditConfig>(
                "[head_export]\nsink = \"s3\"\nbucket = \"b-1\"\nlock_mode = \"legal\"\n"
            )
            .is_err()
        );
    }
}
