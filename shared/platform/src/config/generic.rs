//! `[generic]` configuration section: Standard Webhooks generic intake at `/hooks/generic`.

use super::ConfigError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::time::Duration;

/// Shortest key accepted (bytes after base64 decoding); Standard Webhooks recommends 24 to 64.
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericConfig {
    /// Signing secrets, `whsec_<base64>`. Several for rotation: a request signed with any of them
    /// is accepted. Without any, `/hooks/generic` answers 503. Env: `GATEHOUSE_GENERIC_SECRET`
    /// adds one.
    #[serde(default)]
    pub secrets: Vec<SecretString>,
    /// How far `webhook-timestamp` may be from now, in either direction.
    #[serde(default = "default_tolerance", with = "humantime_serde")]
    pub tolerance: Duration,
    /// Larger bodies are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

impl Default for GenericConfig {
    fn default() -> Self {
        GenericConfig {
            secrets: Vec::new(),
            tolerance: default_tolerance(),
            max_body_bytes: default_max_body(),
        }
    }
}

fn default_tolerance() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_max_body() -> usize {
    256 * 1024
}

impl GenericConfig {
    /// Apply `GATEHOUSE_*` overrides for this section.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("GATEHOUSE_GENERIC_SECRET") {
            check_secret(&v).map_err(|m| ConfigError::new("GATEHOUSE_GENERIC_SECRET", m))?;
            self.secrets.push(SecretString::from(v));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, secret) in self.secrets.iter().enumerate() {
            check_secret(secret.expose_secret())
                .map_err(|m| ConfigError::new(format!("generic.secrets[{i}]"), m))?;
        }
        if self.tolerance < Duration::from_secs(1) || self.tolerance > Duration::from_secs(3600) {
            return Err(ConfigError::new("generic.tolerance", "must be between 1s and 1h"));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new(
                "generic.max_body_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }
}

/// `whsec_<base64>` (or bare base64) of at least [`MIN_SECRET_BYTES`] bytes. The message never
/// contains the secret.
fn check_secret(secret: &str) -> Result<(), String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    match base64_decoded_len(b64) {
        None => Err("is not a whsec_<base64> secret (standard base64 after the prefix)".into()),
        Some(n) if n < MIN_SECRET_BYTES => Err(format!(
            "is too short: the key must be at least {MIN_SECRET_BYTES} bytes ({n} given)"
        )),
        Some(_) => Ok(()),
    }
}

/// Length in bytes of what standard base64 `s` decodes to (padding optional), or `None` if `s`
/// is not standard base64. The runtime decodes with the `base64` crate; this only validates, as
/// this crate does not depend on it.
fn base64_decoded_len(s: &str) -> Option<usize> {
    let data = s.trim_end_matches('=');
    let pad = s.len() - data.len();
    let padded_len_rem = s.len() % 4;
    if data.is_empty() || pad > 2 || (pad > 0 && padded_len_rem != 0) {
        return None;
    }
    if !data
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        return None;
    }
    match data.len() % 4 {
        1 => None,
        r => Some(data.len() / 4 * 3 + r.saturating_sub(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn parse(toml_text: &str) -> GenericConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn defaults() {
        let c = GenericConfig::default();
        assert!(c.secrets.is_empty());
        assert_eq!(c.tolerance, Duration::from_secs(300));
        assert_eq!(c.max_body_bytes, 256 * 1024);
        c.validate().unwrap();
    }

    #[test]
    fn file_and_env_secrets_add_up() {
        let mut c = parse(&format!("secrets = [{SECRET:?}]\ntolerance = \"90s\"\n"));
        let other = "whsec_c2Vjb25kIHNlY3JldCBrZXkgaGVyZSE=";
        c.apply_env(&|k| (k == "GATEHOUSE_GENERIC_SECRET").then(|| other.to_string()))
            .unwrap();
        let secrets: Vec<&str> = c.secrets.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(secrets, [SECRET, other]);
        assert_eq!(c.tolerance, Duration::from_secs(90));
        c.validate().unwrap();
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_decoded_len("QUJD"), Some(3));
        assert_eq!(base64_decoded_len("QUI="), Some(2));
        assert_eq!(base64_decoded_len("QUI"), Some(2));
        assert_eq!(base64_decoded_len("QQ=="), Some(1));
        assert_eq!(base64_decoded_len("QQ"), Some(1));
        assert_eq!(base64_decoded_len("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Some(24));
        for bad in ["", "Q", "QQ=", "QUJD====", "ab$d", "ab-_", "Q==="] {
            assert_eq!(base64_decoded_len(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_secrets_are_named_and_never_echoed() {
        let e = parse("secrets = [\"whsec_not base64!\"]").validate().unwrap_err();
        assert_eq!(e.field, "generic.secrets[0]");
        assert!(!e.to_string().contains("not base64"), "{e}");
        let e = parse(&format!("secrets = [{SECRET:?}, \"whsec_c2hvcnQ=\"]"))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "generic.secrets[1]");
        assert!(e.message.contains("too short"), "{e}");
        assert!(!e.to_string().contains("c2hvcnQ"), "{e}");
        let e = GenericConfig::default()
            .apply_env(&|_| Some("whsec_%%%".into()))
            .unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_GENERIC_SECRET");
        assert!(!e.to_string().contains("%%%"));
    }

    #[test]
    fn bad_tolerance_and_size_are_named() {
        assert_eq!(
            parse("tolerance = \"0s\"").validate().unwrap_err().field,
            "generic.tolerance"
        );
        assert_eq!(
            parse("tolerance = \"2h\"").validate().unwrap_err().field,
            "generic.tolerance"
        );
        assert_eq!(
            parse("max_body_bytes = 5").validate().unwrap_err().field,
            "generic.max_body_bytes"
        );
        assert!(
            toml::from_str::<GenericConfig>("secret = \"x\"").is_err(),
            "unknown field"
        );
    }

    #[test]
    fn secrets_never_reach_debug_output() {
        let c = parse(&format!("secrets = [{SECRET:?}]"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("MfKQ9r8G"), "{dbg}");
    }
}
