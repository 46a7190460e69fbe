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

/// `[audit.head_export]`: `sink = "file"` (with `path`) or `"log"`, every `interval`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadExportConfig {
    pub sink: HeadSinkKind,
    /// `sink = "file"`: the JSON-lines file each export appends one line to (keep it on storage
    /// the database's owner cannot rewrite: another host, an append-only mount, a WORM volume).
    #[serde(default)]
    pub path: Option<PathBuf>,
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
    /// One structured INFO log line (`ledger chain head`), for a log pipeline the database's
    /// owner does not control.
    Log,
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
}
