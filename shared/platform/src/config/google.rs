//! `[google]` configuration section: Google Workspace Reports API push at `/hooks/google`.

use super::{ConfigError, check_token};
use secrecy::SecretString;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Google's ceiling for a channel `token` (characters).
const MAX_TOKEN_LEN: usize = 256;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleConfig {
    /// Accepted `X-Goog-Channel-Token` values (the `token` given to `activities.watch`). Several
    /// for rotation: a notification carrying any of them is accepted. Without any,
    /// `/hooks/google` answers 503. Env: `GATEHOUSE_GOOGLE_CHANNEL_TOKEN` adds one. Each is 16 to
    /// 256 characters, not one character repeated.
    #[serde(default)]
    pub channel_tokens: Vec<SecretString>,
    /// Larger bodies are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    // Channel upkeep and catch-up (issue 18): `docs/intake-google.md`, "Channel upkeep".
    /// Admin SDK base URL (no trailing slash).
    #[serde(default = "default_admin_url")]
    pub admin_url: String,
    /// OAuth token endpoint for a service account with domain-wide delegation.
    #[serde(default = "default_token_url")]
    pub token_url: String,
    /// Public URL of `/hooks/google`: Gatehouse creates and renews the `activities.watch`
    /// channel itself when set (with `channel_secret` and credentials).
    #[serde(default)]
    pub notification_url: Option<String>,
    /// Secret each channel's token is derived from (HMAC-SHA256 of the channel id), so no
    /// token is stored. Env: `GATEHOUSE_GOOGLE_CHANNEL_SECRET`. At least 16 characters.
    #[serde(default)]
    pub channel_secret: Option<SecretString>,
    /// A JSON key file: `authorized_user` (an OAuth client's refresh token of an admin) or
    /// `service_account` (with `delegated_admin`: domain-wide delegation). Env:
    /// `GATEHOUSE_GOOGLE_CREDENTIALS_FILE`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// The admin a service account acts as (domain-wide delegation).
    #[serde(default)]
    pub delegated_admin: Option<String>,
    /// A bearer token minted outside (or by tests). Env: `GATEHOUSE_GOOGLE_ACCESS_TOKEN`.
    #[serde(default)]
    pub access_token: Option<SecretString>,
    /// Lifetime asked for a channel (Google grants at most 6 hours for the Admin SDK).
    #[serde(default = "default_channel_lifetime", with = "humantime_serde")]
    pub channel_lifetime: Duration,
    /// A channel closer than this to its expiry is replaced by a new one.
    #[serde(default = "default_renew_before", with = "humantime_serde")]
    pub renew_before: Duration,
    /// How long the replaced channel stays accepted after its successor exists (notifications
    /// Google already sent on it are still retried), before `channels/stop`.
    #[serde(default = "default_channel_overlap", with = "humantime_serde")]
    pub channel_overlap: Duration,
    /// How often channels are checked and `activities.list` catches up.
    #[serde(default = "default_catchup_interval", with = "humantime_serde")]
    pub catchup_interval: Duration,
    /// Each catch-up starts this long before the newest event seen (Reports data can arrive late).
    #[serde(default = "default_catchup_overlap", with = "humantime_serde")]
    pub catchup_overlap: Duration,
    /// How far back the very first catch-up looks (nothing stored yet).
    #[serde(default = "default_catchup_start", with = "humantime_serde")]
    pub catchup_start: Duration,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// Google's ceiling for an Admin SDK channel.
pub const MAX_CHANNEL_LIFETIME: Duration = Duration::from_secs(6 * 3600);

fn default_admin_url() -> String {
    "https://admin.googleapis.com".to_string()
}
fn default_token_url() -> String {
    "https://oauth2.googleapis.com/token".to_string()
}
fn default_channel_lifetime() -> Duration {
    MAX_CHANNEL_LIFETIME
}
fn default_renew_before() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_channel_overlap() -> Duration {
    Duration::from_secs(120)
}
fn default_catchup_interval() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_catchup_overlap() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_catchup_start() -> Duration {
    Duration::from_secs(3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl GoogleConfig {
    /// Whether the Reports API can be called (catch-up runs).
    pub fn has_credentials(&self) -> bool {
        self.access_token.is_some() || self.credentials_file.is_some()
    }

    /// Whether Gatehouse keeps the watch channel.
    pub fn manages_channels(&self) -> bool {
        self.has_credentials() && self.notification_url.is_some() && self.channel_secret.is_some()
    }

    fn validate_upkeep(&self) -> Result<(), ConfigError> {
        if let Some(s) = &self.channel_secret {
            check_token("google.channel_secret", s, None)?;
        }
        if let Some(u) = &self.notification_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(ConfigError::new(
                "google.notification_url",
                "must be an http(s) URL",
            ));
        }
        if self.notification_url.is_some() && self.channel_secret.is_none() {
            return Err(ConfigError::new(
                "google.channel_secret",
                "is required with google.notification_url (channel tokens are derived from it)",
            ));
        }
        if self.channel_lifetime.is_zero() || self.channel_lifetime > MAX_CHANNEL_LIFETIME {
            return Err(ConfigError::new(
                "google.channel_lifetime",
                "must be more than 0 and at most 6h",
            ));
        }
        if self.renew_before >= self.channel_lifetime {
            return Err(ConfigError::new(
                "google.renew_before",
                "must be shorter than google.channel_lifetime",
            ));
        }
        if self.channel_overlap >= self.renew_before {
            return Err(ConfigError::new(
                "google.channel_overlap",
                "must be shorter than google.renew_before",
            ));
        }
        if self.catchup_interval.is_zero() {
            return Err(ConfigError::new("google.catchup_interval", "must be more than 0"));
        }
        if self.catchup_interval >= self.renew_before {
            return Err(ConfigError::new(
                "google.catchup_interval",
                "must be shorter than google.renew_before (channels are checked at each pass)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("google.timeout", "must be more than 0"));
        }
        if let Some(t) = &self.access_token
            && secrecy::ExposeSecret::expose_secret(t).trim().is_empty()
        {
            return Err(ConfigError::new("google.access_token", "must not be empty"));
        }
        if self.delegated_admin.as_deref().is_some_and(|a| !a.contains('@')) {
            return Err(ConfigError::new(
                "google.delegated_admin",
                "must be an email address",
            ));
        }
        Ok(())
    }
}

impl Default for GoogleConfig {
    fn default() -> Self {
        GoogleConfig {
            channel_tokens: Vec::new(),
            max_body_bytes: default_max_body(),
            admin_url: default_admin_url(),
            token_url: default_token_url(),
            notification_url: None,
            channel_secret: None,
            credentials_file: None,
            delegated_admin: None,
            access_token: None,
            channel_lifetime: default_channel_lifetime(),
            renew_before: default_renew_before(),
            channel_overlap: default_channel_overlap(),
            catchup_interval: default_catchup_interval(),
            catchup_overlap: default_catchup_overlap(),
            catchup_start: default_catchup_start(),
            timeout: default_timeout(),
        }
    }
}

fn default_max_body() -> usize {
    256 * 1024
}

impl GoogleConfig {
    /// Apply `GATEHOUSE_*` overrides for this section.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("GATEHOUSE_GOOGLE_CHANNEL_TOKEN") {
            let token = SecretString::from(v);
            check_token("GATEHOUSE_GOOGLE_CHANNEL_TOKEN", &token, Some(MAX_TOKEN_LEN))?;
            self.channel_tokens.push(token);
        }
        if let Some(v) = env("GATEHOUSE_GOOGLE_CHANNEL_SECRET") {
            let secret = SecretString::from(v);
            check_token("GATEHOUSE_GOOGLE_CHANNEL_SECRET", &secret, None)?;
            self.channel_secret = Some(secret);
        }
        if let Some(v) = env("GATEHOUSE_GOOGLE_CREDENTIALS_FILE") {
            self.credentials_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("GATEHOUSE_GOOGLE_ACCESS_TOKEN") {
            self.access_token = Some(SecretString::from(v));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, token) in self.channel_tokens.iter().enumerate() {
            // At least 16 characters, at most Google's 256-character limit for channel tokens.
            check_token(&format!("google.channel_tokens[{i}]"), token, Some(MAX_TOKEN_LEN))?;
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new("google.max_body_bytes", "must be at least 1024"));
        }
        self.validate_upkeep()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(toml_text: &str) -> GoogleConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults_have_no_token() {
        let c = GoogleConfig::default();
        assert!(c.channel_tokens.is_empty());
        assert_eq!(c.max_body_bytes, 256 * 1024);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn env_adds_a_token_to_the_file_ones() {
        let mut c = parse("channel_tokens = [\"old-channel-token-01\"]\nmax_body_bytes = 4096\n");
        c.apply_env(&|k| (k == "GATEHOUSE_GOOGLE_CHANNEL_TOKEN").then(|| "new-channel-token-02".to_string()))
            .unwrap();
        let tokens: Vec<&str> = c.channel_tokens.iter().map(|t| t.expose_secret()).collect();
        assert_eq!(tokens, ["old-channel-token-01", "new-channel-token-02"]);
        assert_eq!(c.max_body_bytes, 4096);
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_field_and_never_echo_the_token() {
        let e = parse("channel_tokens = [\"a-long-enough-token\", \" \"]")
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "google.channel_tokens[1]");
        // Issue 11, finding 1: a token of 1 character used to be enough.
        for weak in ["x", "0123456789abcde", "gggggggggggggggggggg"] {
            let e = parse(&format!("channel_tokens = [{weak:?}]"))
                .validate()
                .unwrap_err();
            assert_eq!(e.field, "google.channel_tokens[0]", "{weak:?}");
            let e = GoogleConfig::default()
                .apply_env(&|_| Some(weak.to_string()))
                .unwrap_err();
            assert_eq!(e.field, "GATEHOUSE_GOOGLE_CHANNEL_TOKEN", "{weak:?}");
        }
        let long = "s3cret".repeat(50);
        let e = parse(&format!("channel_tokens = [{long:?}]"))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "google.channel_tokens[0]");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = parse("max_body_bytes = 10").validate().unwrap_err();
        assert_eq!(e.field, "google.max_body_bytes");
        let e = GoogleConfig::default()
            .apply_env(&|_| Some(String::new()))
            .unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_GOOGLE_CHANNEL_TOKEN");
        assert!(
            toml::from_str::<GoogleConfig>("channel_token = \"x\"").is_err(),
            "unknown field"
        );
    }

    #[test]
    fn tokens_never_reach_debug_output() {
        let c = parse("channel_tokens = [\"very-s3cret-token\"]");
        c.validate().unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-s3cret-token"), "{dbg}");
    }

    #[test]
    fn upkeep_keys_are_validated_and_name_the_field() {
        let ok = parse(
            "notification_url = \"https://gh.example.com/hooks/google\"\nchannel_secret = \"a-long-channel-secret-01\"\n\
             access_token = \"ya29.x\"\ncatchup_interval = \"1m\"\n",
        );
        ok.validate().unwrap();
        assert!(ok.manages_channels() && ok.has_credentials());
        assert!(!GoogleConfig::default().has_credentials());
        let cases = [
            ("notification_url = \"https://h/x\"", "google.channel_secret"),
            ("channel_secret = \"short\"", "google.channel_secret"),
            (
                "notification_url = \"ftp://h\"\nchannel_secret = \"a-long-channel-secret-01\"",
                "google.notification_url",
            ),
            ("channel_lifetime = \"7h\"", "google.channel_lifetime"),
            ("renew_before = \"6h\"", "google.renew_before"),
            ("channel_overlap = \"30m\"", "google.channel_overlap"),
            ("catchup_interval = \"30m\"", "google.catchup_interval"),
            ("catchup_interval = \"0s\"", "google.catchup_interval"),
            ("timeout = \"0s\"", "google.timeout"),
            ("access_token = \" \"", "google.access_token"),
            ("delegated_admin = \"admin\"", "google.delegated_admin"),
        ];
        for (text, field) in cases {
            let e = parse(text).validate().unwrap_err();
            assert_eq!(e.field, field, "{text}");
        }
        let mut c = GoogleConfig::default();
        c.apply_env(&|k| match k {
            "GATEHOUSE_GOOGLE_CHANNEL_SECRET" => Some("env-channel-secret-0001".into()),
            "GATEHOUSE_GOOGLE_ACCESS_TOKEN" => Some("ya29.env".into()),
            "GATEHOUSE_GOOGLE_CREDENTIALS_FILE" => Some("/etc/g.json".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.channel_secret.as_ref().unwrap().expose_secret(),
            "env-channel-secret-0001"
        );
        assert_eq!(
            c.credentials_file.as_deref(),
            Some(std::path::Path::new("/etc/g.json"))
        );
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("env-channel-secret-0001") && !dbg.contains("ya29.env"),
            "{dbg}"
        );
        let e = GoogleConfig::default()
            .apply_env(&|k| (k == "GATEHOUSE_GOOGLE_CHANNEL_SECRET").then(|| "weak".to_string()))
            .unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_GOOGLE_CHANNEL_SECRET");
    }
}
