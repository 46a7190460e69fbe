//! `[scim]` configuration section: the SCIM 2.0 server at `/scim/v2`.
//!
//! ```toml
//! [scim]
//! max_body_bytes = 262144       # larger requests are refused with 413
//! relay_interval = "1s"         # outbox relay poll (it is also woken after every write)
//! max_results = 200             # page size cap for list responses
//! [[scim.tokens]]
//! name = "okta"
//! token = "a-long-random-string"
//! [[scim.tokens]]
//! name = "entra-old"
//! token = "..."
//! revoked = true                # refused with 401, kept for the record
//! expires_at = 2027-01-01T00:00:00Z   # optional: refused with 401 after this instant
//! ```
//!
//! Every token is at least 16 characters and not one character repeated. `expires_at` is a TOML
//! offset date-time, with or without seconds and fractions (`2027-01-01T00:00Z`,
//! `2027-01-01T09:30:00.5+02:00`); a local date-time or a bare date names no instant and is
//! refused at load, as is anything that is not a real instant.
//!
//! `GATEHOUSE_SCIM_TOKEN` adds one more token named `env`. With no usable token, `/scim/v2`
//! answers 503.

use super::{ConfigError, check_token};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};
use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

/// The environment variable that adds a bearer token named `env`.
pub const SCIM_TOKEN_ENV: &str = "GATEHOUSE_SCIM_TOKEN";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimConfig {
    /// Bearer tokens accepted on `/scim/v2` (several may be valid at once, for rotation).
    #[serde(default)]
    pub tokens: Vec<ScimToken>,
    /// Larger request bodies are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// How often the outbox relay looks for unpublished changes (it is also woken after each
    /// successful write, so this only bounds the delay after a crash or a failed publish).
    #[serde(default = "default_relay_interval", with = "humantime_serde")]
    pub relay_interval: Duration,
    /// Most resources returned in one list response (`count` is capped to this).
    #[serde(default = "default_max_results")]
    pub max_results: usize,
}

/// One bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimToken {
    /// A label for logs and metrics (never the token itself).
    pub name: String,
    pub token: SecretString,
    /// A revoked token is refused (401) like an unknown one.
    #[serde(default)]
    pub revoked: bool,
    /// Refused (401) from this instant on. A TOML offset date-time, e.g. `2027-01-01T00:00:00Z`.
    #[serde(default)]
    pub expires_at: Option<toml::value::Datetime>,
}

impl ScimToken {
    /// The expiry instant. An error (the reason, without the field) when `expires_at` is not an
    /// offset date-time or not a real instant; `Config::load` refuses such a configuration.
    pub fn expires_at_utc(&self) -> Result<Option<DateTime<Utc>>, String> {
        self.expires_at.as_ref().map(toml_instant).transpose()
    }
}

/// A TOML offset date-time as an instant, exactly: seconds and fractions default to zero when
/// omitted (TOML 1.1). A local date-time, a local date or a local time names no instant.
fn toml_instant(d: &toml::value::Datetime) -> Result<DateTime<Utc>, String> {
    const NEEDS: &str = "must be a date-time with an offset, e.g. 2027-01-01T00:00:00Z";
    let (Some(date), Some(time), Some(offset)) = (d.date, d.time, d.offset) else {
        return Err(format!("{d} names no instant: {NEEDS}"));
    };
    let date = NaiveDate::from_ymd_opt(i32::from(date.year), u32::from(date.month), u32::from(date.day));
    let time = NaiveTime::from_hms_nano_opt(
        u32::from(time.hour),
        u32::from(time.minute),
        u32::from(time.second.unwrap_or(0)),
        time.nanosecond.unwrap_or(0),
    );
    let offset = match offset {
        toml::value::Offset::Z => FixedOffset::east_opt(0),
        toml::value::Offset::Custom { minutes } => FixedOffset::east_opt(i32::from(minutes) * 60),
    };
    match (date, time, offset) {
        (Some(date), Some(time), Some(offset)) => offset
            .from_local_datetime(&date.and_time(time))
            .single()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| format!("{d} is not a valid instant")),
        _ => Err(format!("{d} is not a valid instant: {NEEDS}")),
    }
}

impl Default for ScimConfig {
    fn default() -> Self {
        ScimConfig {
            tokens: Vec::new(),
            max_body_bytes: default_max_body(),
            relay_interval: default_relay_interval(),
            max_results: default_max_results(),
        }
    }
}

fn default_max_body() -> usize {
    256 * 1024
}
fn default_relay_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_results() -> usize {
    200
}

impl ScimConfig {
    /// Apply `GATEHOUSE_*` overrides for this section.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env(SCIM_TOKEN_ENV) {
            let token = SecretString::from(v);
            check_token(SCIM_TOKEN_ENV, &token, None)?;
            self.tokens.retain(|t| t.name != "env");
            self.tokens.push(ScimToken {
                name: "env".into(),
                token,
                revoked: false,
                expires_at: None,
            });
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new("scim.max_body_bytes", "must be at least 1024"));
        }
        if self.max_results == 0 {
            return Err(ConfigError::new("scim.max_results", "must be at least 1"));
        }
        if self.relay_interval.is_zero() {
            return Err(ConfigError::new("scim.relay_interval", "must be more than zero"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let field = format!("scim.tokens[{i}]");
            if t.name.trim().is_empty() {
                return Err(ConfigError::new(format!("{field}.name"), "must not be empty"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{field}.name"),
                    format!("{:?} is used by more than one token", t.name),
                ));
            }
            // Revoked tokens are checked too: a weak one should not sit in the file either.
            check_token(&format!("{field}.token"), &t.token, None)?;
            t.expires_at_utc()
                .map_err(|m| ConfigError::new(format!("{field}.expires_at"), m))?;
        }
        Ok(())
    }

    /// Tokens that are neither revoked (expiry is checked per request).
    pub fn active_tokens(&self) -> impl Iterator<Item = &ScimToken> {
        self.tokens.iter().filter(|t| !t.revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(text: &str) -> Result<ScimConfig, String> {
        let cfg: ScimConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|e| e.to_string())?;
        Ok(cfg)
    }

    #[test]
    fn defaults_have_no_token() {
        let cfg = parse("").unwrap();
        assert!(cfg.tokens.is_empty());
        assert_eq!(cfg.max_body_bytes, 256 * 1024);
    }

    #[test]
    fn several_tokens_revoked_and_expiring() {
        let cfg = parse(
            "[[tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n\
             [[tokens]]\nname = \"b\"\ntoken = \"fedcba9876543210\"\nrevoked = true\n\
             [[tokens]]\nname = \"c\"\ntoken = \"fedcba9876543210x\"\nexpires_at = 2027-01-01T00:00:00Z\n",
        )
        .unwrap();
        assert_eq!(cfg.tokens.len(), 3);
        assert_eq!(cfg.active_tokens().count(), 2);
        assert_eq!(
            cfg.tokens[2]
                .expires_at_utc()
                .unwrap()
                .map(|t| t.to_rfc3339())
                .as_deref(),
            Some("2027-01-01T00:00:00+00:00")
        );
    }

    /// Every TOML offset date-time form is converted exactly (issue 11, finding 7: without
    /// seconds the expiry used to be silently dropped); local forms are refused, naming the field.
    #[test]
    fn expiry_is_converted_exactly_from_every_toml_form() {
        let expiry = |value: &str| {
            parse(&format!(
                "[[tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\nexpires_at = {value}\n"
            ))
            .map(|c| c.tokens[0].expires_at_utc().unwrap().unwrap().to_rfc3339())
        };
        for (toml_value, instant) in [
            ("2020-01-01T00:00Z", "2020-01-01T00:00:00+00:00"),
            ("2020-01-01T00:00:00Z", "2020-01-01T00:00:00+00:00"),
            ("2020-01-01 00:00:00z", "2020-01-01T00:00:00+00:00"),
            ("2020-01-01T01:30+01:30", "2020-01-01T00:00:00+00:00"),
            ("2019-12-31T19:00:00-05:00", "2020-01-01T00:00:00+00:00"),
            ("2020-01-01T00:00:00.25Z", "2020-01-01T00:00:00.250+00:00"),
            (
                "2020-01-01T02:00:00.000000001+02:00",
                "2020-01-01T00:00:00.000000001+00:00",
            ),
        ] {
            assert_eq!(expiry(toml_value).as_deref(), Ok(instant), "{toml_value}");
        }
        for local in [
            "2020-01-01T00:00:00",
            "2020-01-01T00:00",
            "2020-01-01",
            "00:00:00",
        ] {
            let e = expiry(local).unwrap_err();
            assert!(e.contains("scim.tokens[0].expires_at"), "{local}: {e}");
            assert!(e.contains("offset"), "{local}: {e}");
        }
        let e = expiry("2020-01-01T23:59:60Z").unwrap_err();
        assert!(e.contains("scim.tokens[0].expires_at"), "{e}");
    }

    #[test]
    fn weak_tokens_are_refused_from_file_and_env() {
        for weak in ["", "0123456789abcde", "zzzzzzzzzzzzzzzzzzzz"] {
            let e = parse(&format!(
                "[[tokens]]\nname = \"a\"\ntoken = {weak:?}\nrevoked = true\n"
            ))
            .unwrap_err();
            assert!(e.contains("scim.tokens[0].token"), "{weak:?}: {e}");
            let e = ScimConfig::default()
                .apply_env(&|k| (k == SCIM_TOKEN_ENV).then(|| weak.to_string()))
                .unwrap_err();
            assert_eq!(e.field, SCIM_TOKEN_ENV, "{weak:?}");
        }
    }

    #[test]
    fn env_adds_a_token_named_env() {
        let mut cfg = ScimConfig::default();
        cfg.apply_env(&|k| (k == SCIM_TOKEN_ENV).then(|| "from-the-environment".to_string()))
            .unwrap();
        assert_eq!(cfg.tokens.len(), 1);
        assert_eq!(cfg.tokens[0].name, "env");
        assert_eq!(cfg.tokens[0].token.expose_secret(), "from-the-environment");
        let e = ScimConfig::default()
            .apply_env(&|k| (k == SCIM_TOKEN_ENV).then(String::new))
            .unwrap_err();
        assert_eq!(e.field, SCIM_TOKEN_ENV);
    }

    #[test]
    fn errors_name_the_field_and_never_the_secret() {
        let e = parse("[[tokens]]\nname = \"a\"\ntoken = \"short-secret\"\n").unwrap_err();
        assert!(e.contains("scim.tokens[0].token"), "{e}");
        assert!(!e.contains("short-secret"), "{e}");
        let e = parse(
            "[[tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n\
             [[tokens]]\nname = \"a\"\ntoken = \"0123456789abcdefg\"\n",
        )
        .unwrap_err();
        assert!(e.contains("scim.tokens[1].name"), "{e}");
        let e = parse("[[tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\nexpires_at = 2027-01-01\n")
            .unwrap_err();
        assert!(e.contains("expires_at"), "{e}");
        let e = parse("max_body_bytes = 10\n").unwrap_err();
        assert!(e.contains("scim.max_body_bytes"), "{e}");
    }

    #[test]
    fn debug_never_shows_a_token() {
        let cfg = parse("[[tokens]]\nname = \"a\"\ntoken = \"super-secret-token-value\"\n").unwrap();
        assert!(!format!("{cfg:?}").contains("super-secret-token-value"));
    }
}
