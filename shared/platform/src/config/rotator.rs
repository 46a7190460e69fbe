//! `[rotator]`: the secrets Gatehouse rotates. Each secret has a kind (what credential it is), a
//! store (where consumers read it), a cron schedule, a grace period before the old credential is
//! revoked, and the people who hold it. Kinds and stores are tagged enums, so a field of one
//! kind cannot be written on another.

use super::ConfigError;
use secrecy::SecretString;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

/// Default base URL of the GCP Secret Manager REST API.
pub const GCP_SECRET_MANAGER_URL: &str = "https://secretmanager.googleapis.com/v1";
/// Default base URL of the GCP IAM REST API.
pub const GCP_IAM_URL: &str = "https://iam.googleapis.com/v1";

/// The rotator's settings and declared secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotatorConfig {
    /// The secrets to rotate; none = the rotator does not run.
    #[serde(default)]
    pub secrets: Vec<SecretConfig>,
    /// Longest idle wait between two looks at requests and due steps.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long one instance holds a rotation it drives; another instance takes it over after.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// Backoff after a failed rotation (doubles per failure up to `retry_max_delay`).
    #[serde(default = "default_retry_min", with = "humantime_serde")]
    pub retry_min_delay: Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// GCP REST endpoints and credentials.
    #[serde(default)]
    pub gcp: GcpApiConfig,
}

impl Default for RotatorConfig {
    fn default() -> Self {
        RotatorConfig {
            secrets: Vec::new(),
            poll_interval: default_poll(),
            lease: default_lease(),
            retry_min_delay: default_retry_min(),
            retry_max_delay: default_retry_max(),
            gcp: GcpApiConfig::default(),
        }
    }
}

/// Where the GCP REST APIs are (tests point them at the fakes) and how to authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpApiConfig {
    #[serde(default = "default_sm_url")]
    pub secret_manager_url: String,
    #[serde(default = "default_iam_url")]
    pub iam_url: String,
    /// A fixed OAuth access token; without one, Application Default Credentials are used.
    #[serde(default)]
    pub access_token: Option<SecretString>,
}

impl Default for GcpApiConfig {
    fn default() -> Self {
        GcpApiConfig {
            secret_manager_url: default_sm_url(),
            iam_url: default_iam_url(),
            access_token: None,
        }
    }
}

/// One declared secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// Unique name (`gatehouse rotate NAME`, ledger subject `secret:NAME`).
    pub name: String,
    pub kind: KindConfig,
    pub store: StoreConfig,
    /// Cron pattern (5 or 6 fields, UTC), e.g. `0 3 * * 1`; none = only on triggers.
    #[serde(default)]
    pub schedule: Option<String>,
    /// How long the old credential stays valid after the new one is current.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub grace: Duration,
    /// After the grace period the old credential is disabled; this much later it is deleted.
    #[serde(default = "default_destroy_after", with = "humantime_serde")]
    pub destroy_after: Duration,
    /// Emails of the people who hold the secret: their offboarding rotates it.
    #[serde(default)]
    pub holders: Vec<String>,
    /// What a key created outside Gatehouse for this credential's principal causes.
    #[serde(default)]
    pub on_out_of_band: OutOfBand,
}

/// What the credential is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KindConfig {
    /// A Looker API3 key of a service-account user (through the `[looker]` admin connection).
    LookerApi3 { user_id: String },
    /// An AWS IAM user's access key (AWS SDK credentials and endpoints).
    AwsAccessKey { user_name: String },
    /// A GCP service-account key.
    GcpServiceAccountKey { email: String },
}

/// Where consumers read the credential.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// AWS Secrets Manager (staging labels AWSPENDING/AWSCURRENT/AWSPREVIOUS).
    AwsSecretsManager { secret_id: String },
    /// GCP Secret Manager, `projects/P/secrets/S` (consumers read `versions/latest`).
    GcpSecretManager { name: String },
}

/// Reaction to a key created outside Gatehouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfBand {
    Rotate,
    #[default]
    Alert,
}

fn default_poll() -> Duration {
    Duration::from_secs(30)
}
fn default_lease() -> Duration {
    Duration::from_secs(300)
}
fn default_retry_min() -> Duration {
    Duration::from_secs(60)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(3600)
}
fn default_grace() -> Duration {
    Duration::from_secs(3600)
}
fn default_destroy_after() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_sm_url() -> String {
    GCP_SECRET_MANAGER_URL.into()
}
fn default_iam_url() -> String {
    GCP_IAM_URL.into()
}

impl RotatorConfig {
    /// `GATEHOUSE_GCP_*` override the GCP endpoints and token.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("GATEHOUSE_GCP_SECRET_MANAGER_URL") {
            self.gcp.secret_manager_url = v;
        }
        if let Some(v) = env("GATEHOUSE_GCP_IAM_URL") {
            self.gcp.iam_url = v;
        }
        if let Some(v) = env("GATEHOUSE_GCP_ACCESS_TOKEN") {
            self.gcp.access_token = Some(SecretString::from(v));
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        for (i, s) in self.secrets.iter().enumerate() {
            let at = |f: &str| format!("rotator.secrets[{i}].{f}");
            if s.name.trim().is_empty() || s.name.contains(char::is_whitespace) {
                return Err(ConfigError::new(at("name"), "must be a non-empty word"));
            }
            if !names.insert(s.name.as_str()) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("{:?} is declared twice", s.name),
                ));
            }
            if let Some(cron) = &s.schedule {
                croner::Cron::from_str(cron).map_err(|e| {
                    ConfigError::new(at("schedule"), format!("{cron:?} is not a cron pattern: {e}"))
                })?;
            }
            if s.grace.is_zero() {
                return Err(ConfigError::new(at("grace"), "must be longer than zero"));
            }
            if let Some(h) = s.holders.iter().find(|h| !h.contains('@')) {
                return Err(ConfigError::new(at("holders"), format!("{h:?} is not an email")));
            }
            if let StoreConfig::GcpSecretManager { name } = &s.store {
                let parts: Vec<&str> = name.split('/').collect();
                if !(parts.len() == 4 && parts[0] == "projects" && parts[2] == "secrets") {
                    return Err(ConfigError::new(
                        at("store.name"),
                        format!("{name:?} is not projects/PROJECT/secrets/SECRET"),
                    ));
                }
            }
        }
        for (field, url) in [
            ("rotator.gcp.secret_manager_url", &self.gcp.secret_manager_url),
            ("rotator.gcp.iam_url", &self.gcp.iam_url),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(field, format!("{url:?} is not an http(s) URL")));
            }
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::new(
                "rotator.poll_interval",
                "must be longer than zero",
            ));
        }
        Ok(())
    }

    /// The declared secret called `name`.
    pub fn secret(&self, name: &str) -> Option<&SecretConfig> {
        self.secrets.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use secrecy::ExposeSecret;

    fn load(text: &str) -> Result<Config, super::ConfigError> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        Config::load(Some(f.path()), |_| None)
    }

    const ONE: &str = r#"
[[rotator.secrets]]
name = "looker-etl"
schedule = "0 3 * * 1"
grace = "2h"
holders = ["alice@example.com"]
on_out_of_band = "rotate"
kind = { type = "looker_api3", user_id = "42" }
store = { type = "aws_secrets_manager", secret_id = "gatehouse/looker-etl" }
"#;

    #[test]
    fn a_secret_parses_with_tagged_kind_and_store() {
        let cfg = load(ONE).unwrap();
        let s = cfg.rotator.secret("looker-etl").unwrap();
        assert_eq!(s.kind, super::KindConfig::LookerApi3 { user_id: "42".into() });
        assert_eq!(
            s.store,
            super::StoreConfig::AwsSecretsManager {
                secret_id: "gatehouse/looker-etl".into()
            }
        );
        assert_eq!(s.grace, std::time::Duration::from_secs(7200));
        assert_eq!(s.on_out_of_band, super::OutOfBand::Rotate);
        assert_eq!(cfg.rotator.gcp.secret_manager_url, super::GCP_SECRET_MANAGER_URL);
    }

    #[test]
    fn a_bad_cron_names_the_field() {
        let e = load(&ONE.replace("0 3 * * 1", "every monday")).unwrap_err();
        assert_eq!(e.field, "rotator.secrets[0].schedule", "{e}");
    }

    #[test]
    fn a_field_of_another_kind_is_refused() {
        let e = load(&ONE.replace("user_id = \"42\"", "user_name = \"x\"")).unwrap_err();
        assert!(e.field.starts_with("rotator"), "{e}");
        assert!(e.to_string().contains("user_name"), "{e}");
    }

    #[test]
    fn duplicate_names_and_bad_gcp_names_are_named() {
        let e = load(&format!("{ONE}{ONE}")).unwrap_err();
        assert_eq!(e.field, "rotator.secrets[1].name");
        let gcp = ONE.replace(
            "{ type = \"aws_secrets_manager\", secret_id = \"gatehouse/looker-etl\" }",
            "{ type = \"gcp_secret_manager\", name = \"payments\" }",
        );
        assert_eq!(load(&gcp).unwrap_err().field, "rotator.secrets[0].store.name");
    }

    #[test]
    fn gcp_endpoints_come_from_the_environment_and_the_token_stays_secret() {
        let mut cfg = super::RotatorConfig::default();
        cfg.apply_env(&|k| match k {
            "GATEHOUSE_GCP_SECRET_MANAGER_URL" => Some("http://127.0.0.1:1/v1".into()),
            "GATEHOUSE_GCP_ACCESS_TOKEN" => Some("ya29.not-for-logs".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(cfg.gcp.secret_manager_url, "http://127.0.0.1:1/v1");
        assert_eq!(
            cfg.gcp.access_token.as_ref().unwrap().expose_secret(),
            "ya29.not-for-logs"
        );
        assert!(!format!("{cfg:?}").contains("not-for-logs"));
    }
}
