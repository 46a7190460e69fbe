//! `[google]` configuration section: Google Workspace Reports API push at `/hooks/google`.

use super::{ConfigError, check_token};
use secrecy::SecretString;
use serde::Deserialize;

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
}

impl Default for GoogleConfig {
    fn default() -> Self {
        GoogleConfig {
            channel_tokens: Vec::new(),
            max_body_bytes: default_max_body(),
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
        Ok(())
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
}
