//! `[aws]`, `[gcp]` and `[reconcile]` sections: the cloud IAM targets and the scheduled
//! reconcile. Both targets are off by default, so existing configurations are unchanged.

use super::ConfigError;
use secrecy::SecretString;
use serde::Deserialize;
use std::str::FromStr;
use std::time::Duration;

/// AWS IAM as a target (credentials and region come from the AWS SDK's own chain:
/// `AWS_REGION`, `AWS_ENDPOINT_URL(_IAM)`, profiles, instance roles).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// Manage IAM group memberships, tags, access keys and login profiles.
    #[serde(default)]
    pub enabled: bool,
    /// How an identity maps to its IAM user; required when enabled.
    #[serde(default)]
    pub user_mapping: Option<AwsUserMappingConfig>,
    /// Endpoint override (e.g. a VPC endpoint or a test server); default: the SDK's.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Region override; default: the SDK's chain (`AWS_REGION`, profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Profile of the shared credentials file to use; default: the SDK's chain.
    #[serde(default)]
    pub profile: Option<String>,
    /// A shared credentials file other than `~/.aws/credentials`.
    #[serde(default)]
    pub credentials_file: Option<std::path::PathBuf>,
    /// IAM Identity Center group memberships (`[aws.identity_center]`; issue 20). Independent of
    /// `enabled` (which is about IAM users).
    #[serde(default)]
    pub identity_center: Option<super::IdentityCenterConfig>,
}

/// `user_mapping = { tag = "KEY" }` (the IAM user whose tag KEY holds the email) or
/// `user_mapping = { template = "{local}" }` (`{email}`, `{local}`, `{login}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AwsUserMappingConfig {
    Tag(String),
    Template(String),
}

/// GCP IAM as a target. Base URLs are configurable so tests point at a fake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpConfig {
    /// Manage role bindings on the projects, datasets and service accounts the policy names.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_resource_manager")]
    pub resource_manager_url: String,
    #[serde(default = "default_bigquery")]
    pub bigquery_url: String,
    #[serde(default = "default_iam")]
    pub iam_url: String,
    /// The Cloud Identity Groups API (rules' `gcp_groups`).
    #[serde(default = "default_cloud_identity")]
    pub cloud_identity_url: String,
    /// Memberships per `groups.memberships.list` page in reconcile (1..=1000).
    #[serde(default = "default_groups_page_size")]
    pub groups_page_size: u32,
    /// Where the OAuth access token comes from.
    #[serde(default)]
    pub token: GcpTokenSource,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Read-modify-write attempts of one policy when another writer wins the etag race.
    #[serde(default = "default_conflict_retries")]
    pub conflict_retries: usize,
}

impl Default for GcpConfig {
    fn default() -> Self {
        toml::from_str("").expect("empty gcp section uses defaults")
    }
}

/// `[gcp.token] source = "adc"` (Application Default Credentials, the default) or
/// `source = "static"` with `token` (or `GATEHOUSE_GCP_ACCESS_TOKEN`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum GcpTokenSource {
    #[default]
    Adc,
    Static {
        token: SecretString,
    },
}

/// Reconcile: compare directory + policy with what Looker, AWS and GCP hold, and fix or report.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Run the scheduled reconcile inside the processor.
    #[serde(default)]
    pub scheduled: bool,
    /// Cron expression (5 or 6 fields, UTC); default daily at 03:00.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// Per target: `enforce` (revert drift) or `report` (ledger + metric only).
    #[serde(default)]
    pub mode: Modes,
    /// Looker users per `GET /users` page (1..=1000; issue 14).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// The rolling audit of user attribute values (one call per user, Looker has no bulk read)
    /// covers everyone every this many reconciles.
    #[serde(default = "default_attribute_audit_runs")]
    pub attribute_audit_runs: u32,
    /// Looker calls of the month kept for events: a scheduled reconcile that would eat into
    /// them is skipped. Default: 10 % of `[looker.budget] monthly_call_quota`.
    #[serde(default)]
    pub event_reserve: Option<u64>,
    /// How long the leader's claim on a scheduled run lasts without renewal (renewed every
    /// third of it): a replica takes over a run whose leader stopped after this.
    #[serde(default = "default_leader_lease", with = "humantime_serde")]
    pub leader_lease: Duration,
    /// Accounts holding managed grants that match nobody in the directory (issue 15):
    /// `report` (list and ledger them) or `disable` (offboard orphan Looker users, IAM users and
    /// GCP members through the apply loop, counted by the mass-change breaker).
    #[serde(default = "default_orphans")]
    pub orphans: String,
    /// Access snapshots kept (issue 15): the newest this many reconcile runs ...
    #[serde(default = "default_snapshot_keep_runs")]
    pub snapshot_keep_runs: u32,
    /// ... and none older than this many days (unset: no age limit).
    #[serde(default)]
    pub snapshot_keep_days: Option<u32>,
}

/// What reconcile does with orphan accounts (`[reconcile] orphans`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Orphans {
    #[default]
    Report,
    Disable,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            scheduled: false,
            schedule: default_schedule(),
            mode: Modes::default(),
            page_size: default_page_size(),
            attribute_audit_runs: default_attribute_audit_runs(),
            event_reserve: None,
            leader_lease: default_leader_lease(),
            orphans: default_orphans(),
            snapshot_keep_runs: default_snapshot_keep_runs(),
            snapshot_keep_days: None,
        }
    }
}

fn default_page_size() -> usize {
    1000
}
fn default_attribute_audit_runs() -> u32 {
    7
}
fn default_orphans() -> String {
    "report".into()
}
fn default_snapshot_keep_runs() -> u32 {
    30
}
fn default_leader_lease() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Report,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Modes {
    #[serde(default)]
    pub looker: Mode,
    #[serde(default)]
    pub aws: Mode,
    #[serde(default)]
    pub gcp: Mode,
}

fn default_resource_manager() -> String {
    "https://cloudresourcemanager.googleapis.com".into()
}
fn default_bigquery() -> String {
    "https://bigquery.googleapis.com".into()
}
fn default_iam() -> String {
    "https://iam.googleapis.com".into()
}
fn default_cloud_identity() -> String {
    "https://cloudidentity.googleapis.com".into()
}
fn default_groups_page_size() -> u32 {
    200
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_conflict_retries() -> usize {
    5
}
fn default_schedule() -> String {
    "0 3 * * *".into()
}

impl AwsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.user_mapping.is_none() {
            return Err(ConfigError::new(
                "aws.user_mapping",
                "is required when aws is enabled: { tag = \"KEY\" } or { template = \"{local}\" }",
            ));
        }
        match &self.user_mapping {
            Some(AwsUserMappingConfig::Tag(k)) if k.trim().is_empty() => {
                Err(ConfigError::new("aws.user_mapping.tag", "is empty"))
            }
            Some(AwsUserMappingConfig::Template(t))
                if !["{email}", "{local}", "{login}"].iter().any(|p| t.contains(p)) =>
            {
                Err(ConfigError::new(
                    "aws.user_mapping.template",
                    format!("{t:?} names no identity field: use {{email}}, {{local}} or {{login}}"),
                ))
            }
            _ => Ok(()),
        }?;
        check_url("aws.endpoint_url", self.endpoint_url.as_deref())?;
        match &self.identity_center {
            Some(ic) => ic.validate(),
            None => Ok(()),
        }
    }
}

impl GcpConfig {
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("GATEHOUSE_GCP_ACCESS_TOKEN") {
            if v.trim().is_empty() {
                return Err(ConfigError::new("GATEHOUSE_GCP_ACCESS_TOKEN", "is empty"));
            }
            self.token = GcpTokenSource::Static {
                token: SecretString::from(v),
            };
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("gcp.resource_manager_url", Some(&self.resource_manager_url))?;
        check_url("gcp.bigquery_url", Some(&self.bigquery_url))?;
        check_url("gcp.iam_url", Some(&self.iam_url))?;
        check_url("gcp.cloud_identity_url", Some(&self.cloud_identity_url))?;
        if !(1..=1000).contains(&self.groups_page_size) {
            return Err(ConfigError::new(
                "gcp.groups_page_size",
                "must be between 1 and 1000",
            ));
        }
        if self.conflict_retries == 0 {
            return Err(ConfigError::new("gcp.conflict_retries", "must be at least 1"));
        }
        Ok(())
    }
}

impl ReconcileConfig {
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("GATEHOUSE_RECONCILE_SCHEDULE") {
            self.schedule = v;
            self.scheduled = true;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.page_size) {
            return Err(ConfigError::new(
                "reconcile.page_size",
                format!(
                    "{} is not between 1 and 1000 (Looker's largest page)",
                    self.page_size
                ),
            ));
        }
        if self.attribute_audit_runs == 0 {
            return Err(ConfigError::new(
                "reconcile.attribute_audit_runs",
                "must be at least 1 (1: every reconcile reads every user's attribute values)",
            ));
        }
        self.orphan_mode()?;
        if self.snapshot_keep_runs == 0 {
            return Err(ConfigError::new(
                "reconcile.snapshot_keep_runs",
                "must be at least 1 (the access review reads the last snapshot)",
            ));
        }
        if self.leader_lease < Duration::from_secs(3) {
            return Err(ConfigError::new("reconcile.leader_lease", "must be at least 3s"));
        }
        self.cron().map(|_| ())
    }

    /// The parsed `orphans` setting.
    pub fn orphan_mode(&self) -> Result<Orphans, ConfigError> {
        match self.orphans.as_str() {
            "report" => Ok(Orphans::Report),
            "disable" => Ok(Orphans::Disable),
            other => Err(ConfigError::new(
                "reconcile.orphans",
                format!("{other:?} is not one of \"report\", \"disable\""),
            )),
        }
    }

    /// How many access snapshots to keep.
    pub fn snapshot_retention(&self) -> gatehouse_domain::access::Retention {
        gatehouse_domain::access::Retention {
            keep_runs: self.snapshot_keep_runs.max(1),
            keep_days: self.snapshot_keep_days,
        }
    }

    /// The parsed schedule.
    pub fn cron(&self) -> Result<croner::Cron, ConfigError> {
        croner::Cron::from_str(&self.schedule).map_err(|e| {
            ConfigError::new(
                "reconcile.schedule",
                format!("{:?} is not a cron expression: {e}", self.schedule),
            )
        })
    }
}

pub(super) fn check_url(field: &str, url: Option<&str>) -> Result<(), ConfigError> {
    match url {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
            Err(ConfigError::new(field, format!("{u:?} is not an http(s) URL")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use secrecy::ExposeSecret;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(Some(f.path()), move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn clouds_are_off_and_reconcile_is_daily_by_default() {
        let cfg = load("", &[]).unwrap();
        assert!(!cfg.aws.enabled && !cfg.gcp.enabled && !cfg.reconcile.scheduled);
        assert_eq!(
            cfg.gcp.resource_manager_url,
            "https://cloudresourcemanager.googleapis.com"
        );
        assert_eq!(cfg.reconcile.mode, Modes::default());
        let cron = cfg.reconcile.cron().unwrap();
        let next = cron
            .find_next_occurrence(&chrono::DateTime::from_timestamp(0, 0).unwrap(), false)
            .unwrap();
        assert_eq!(next.to_rfc3339(), "1970-01-01T03:00:00+00:00");
    }

    #[test]
    fn full_sections_parse() {
        let cfg = load(
            "[aws]\nenabled = true\nuser_mapping = { tag = \"idp-email\" }\n\
             [gcp]\nenabled = true\nresource_manager_url = \"http://127.0.0.1:1\"\n\
             [gcp.token]\nsource = \"static\"\ntoken = \"t0ken-from-file\"\n\
             [reconcile]\nscheduled = true\nschedule = \"*/5 * * * *\"\nmode = { aws = \"report\" }\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            cfg.aws.user_mapping,
            Some(AwsUserMappingConfig::Tag("idp-email".into()))
        );
        assert_eq!(cfg.reconcile.mode.aws, Mode::Report);
        assert_eq!(cfg.reconcile.mode.gcp, Mode::Enforce);
        match &cfg.gcp.token {
            GcpTokenSource::Static { token } => assert_eq!(token.expose_secret(), "t0ken-from-file"),
            other => panic!("{other:?}"),
        }
        assert!(
            !format!("{cfg:?}").contains("t0ken-from-file"),
            "token reached Debug"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = load("[aws]\nenabled = true\n", &[]).unwrap_err();
        assert_eq!(e.field, "aws.user_mapping", "{e}");
        let e = load("[aws]\nuser_mapping = { template = \"alice\" }\n", &[]).unwrap_err();
        assert_eq!(e.field, "aws.user_mapping.template", "{e}");
        let e = load("[reconcile]\nschedule = \"every day\"\n", &[]).unwrap_err();
        assert_eq!(e.field, "reconcile.schedule", "{e}");
        let e = load("[reconcile]\nmode = { aws = \"ignore\" }\n", &[]).unwrap_err();
        assert!(e.field.starts_with("reconcile"), "{e}");
        for (toml, field) in [
            ("[reconcile]\npage_size = 1001\n", "reconcile.page_size"),
            ("[reconcile]\npage_size = 0\n", "reconcile.page_size"),
            (
                "[reconcile]\nattribute_audit_runs = 0\n",
                "reconcile.attribute_audit_runs",
            ),
            ("[reconcile]\nleader_lease = \"1s\"\n", "reconcile.leader_lease"),
            ("[reconcile]\norphans = \"delete\"\n", "reconcile.orphans"),
            ("[reconcile]\norphans = \"Report\"\n", "reconcile.orphans"),
            (
                "[reconcile]\nsnapshot_keep_runs = 0\n",
                "reconcile.snapshot_keep_runs",
            ),
        ] {
            assert_eq!(load(toml, &[]).unwrap_err().field, field, "{toml}");
        }
        let c = load(
            "[reconcile]\norphans = \"disable\"\nsnapshot_keep_days = 90\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.reconcile.orphan_mode().unwrap(), Orphans::Disable);
        assert_eq!(c.reconcile.snapshot_retention().keep_days, Some(90));
        assert_eq!(
            load("", &[]).unwrap().reconcile.orphan_mode().unwrap(),
            Orphans::Report,
            "report by default"
        );
        let e = load("[gcp]\niam_url = \"iam.googleapis.com\"\n", &[]).unwrap_err();
        assert_eq!(e.field, "gcp.iam_url", "{e}");
        for (toml, field) in [
            ("[gcp]\ngroups_page_size = 0\n", "gcp.groups_page_size"),
            ("[gcp]\ngroups_page_size = 1001\n", "gcp.groups_page_size"),
            (
                "[gcp]\ncloud_identity_url = \"cloudidentity\"\n",
                "gcp.cloud_identity_url",
            ),
        ] {
            assert_eq!(load(toml, &[]).unwrap_err().field, field, "{toml}");
        }
        let e = load("[gcp]\nenabeld = true\n", &[]).unwrap_err();
        assert_eq!(e.field, "gcp.enabeld", "{e}");
    }

    #[test]
    fn env_sets_the_token_and_schedule() {
        let cfg = load(
            "",
            &[
                ("GATEHOUSE_GCP_ACCESS_TOKEN", "env-t0ken"),
                ("GATEHOUSE_RECONCILE_SCHEDULE", "0 */6 * * *"),
            ],
        )
        .unwrap();
        assert!(
            matches!(&cfg.gcp.token, GcpTokenSource::Static { token } if token.expose_secret() == "env-t0ken")
        );
        assert!(cfg.reconcile.scheduled);
        let e = load("", &[("GATEHOUSE_RECONCILE_SCHEDULE", "nope")]).unwrap_err();
        assert_eq!(e.field, "reconcile.schedule");
    }
}
