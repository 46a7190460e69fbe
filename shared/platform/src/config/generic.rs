//! `[generic]` configuration section: Standard Webhooks generic intake at `/hooks/generic`.

use super::{ConfigError, check_whsec};
use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericConfig {
    /// Signing secrets, `whsec_` + standard base64 of 24 to 64 random bytes (as the Standard
    /// Webhooks spec says). Several for rotation: a request signed with any of them is accepted. Without any, `/hooks/generic` answers 503. Env: `GATEHOUSE_GENERIC_SECRET`
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
            let secret = SecretString::from(v);
            check_whsec("GATEHOUSE_GENERIC_SECRET", &secret)?;
            self.secrets.push(secret);
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, secret) in self.secrets.iter().enumerate() {
            check_whsec(&format!("generic.secrets[{i}]"), secret)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

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
        let other = "whsec_c2Vjb25kIHNlY3JldCBrZXkgaGVyZSwgcm90YXRlZCE=";
        c.apply_env(&|k| (k == "GATEHOUSE_GENERIC_SECRET").then(|| other.to_string()))
            .unwrap();
        let secrets: Vec<&str> = c.secrets.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(secrets, [SECRET, other]);
        assert_eq!(c.tolerance, Duration::from_secs(90));
        c.validate().unwrap();
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
        assert!(e.message.contains("24 to 64 bytes"), "{e}");
        assert!(!e.to_string().contains("c2hvcnQ"), "{e}");
        let e = GenericConfig::default()
            .apply_env(&|_| Some("whsec_%%%".into()))
            .unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_GENERIC_SECRET");
        assert!(!e.to_string().contains("%%%"));
        // Issue 11, finding 1: the spec's shape, whsec_ + 24 to 64 bytes, and never empty.
        for weak in [
            "",
            "whsec_",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_c2Vjb25kIHNlY3JldCBrZXkgaGVyZSE=",
        ] {
            let e = GenericConfig::default()
                .apply_env(&|_| Some(weak.into()))
                .unwrap_err();
            assert_eq!(e.field, "GATEHOUSE_GENERIC_SECRET", "{weak:?}");
            let e = parse(&format!("secrets = [{weak:?}]")).validate().unwrap_err();
            assert_eq!(e.field, "generic.secrets[0]", "{weak:?}");
        }
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
