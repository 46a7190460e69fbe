//! `[looker] platform` and `[looker.core]`: Looker (Google Cloud core) (issue 14 item 5).

use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// Which Looker the instance is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookerPlatform {
    /// Looker (original): Gatehouse creates users (`POST /users`) and their email credentials.
    #[default]
    Original,
    /// Looker (Google Cloud core): users appear at their first login through the identity
    /// provider; signing in needs `roles/looker.instanceUser` on the instance's project.
    Core,
}

impl LookerPlatform {
    fn parse(v: &str) -> Option<Self> {
        match v.trim() {
            "original" => Some(LookerPlatform::Original),
            "core" => Some(LookerPlatform::Core),
            _ => None,
        }
    }
}

/// `[looker.core]`: what Looker (Google Cloud core) needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookerCoreConfig {
    /// The project holding the instance, `projects/P`: the login binding is set on it.
    #[serde(default)]
    pub project: Option<String>,
    /// The role that lets a person sign in.
    #[serde(default = "default_role")]
    pub role: String,
    /// How often the first-login run looks for users created since its last run (one Looker
    /// call a run when nothing is new: 720 a month at the default 1 h, within every edition's
    /// quota; docs/looker-budget.md).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub first_login_interval: Duration,
    /// Users per search call of the first-login run (1..=1000).
    #[serde(default = "default_page_size")]
    pub first_login_page_size: usize,
}

fn default_role() -> String {
    gatehouse_domain::looker_core::INSTANCE_USER_ROLE.to_string()
}

fn default_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_page_size() -> usize {
    100
}

impl Default for LookerCoreConfig {
    fn default() -> Self {
        LookerCoreConfig {
            project: None,
            role: default_role(),
            first_login_interval: default_interval(),
            first_login_page_size: default_page_size(),
        }
    }
}

impl LookerCoreConfig {
    pub(super) fn apply_env(
        platform: &mut LookerPlatform,
        core: &mut LookerCoreConfig,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = env("GATEHOUSE_LOOKER_PLATFORM") {
            *platform = LookerPlatform::parse(&v).ok_or_else(|| {
                ConfigError::new(
                    "GATEHOUSE_LOOKER_PLATFORM",
                    format!("{v:?} is not original or core"),
                )
            })?;
        }
        if let Some(v) = env("GATEHOUSE_LOOKER_CORE_PROJECT") {
            core.project = Some(v.trim().to_string());
        }
        Ok(())
    }

    /// A core platform needs the project (and a GCP target to write the binding with).
    pub(super) fn validate(&self, platform: LookerPlatform, gcp_enabled: bool) -> Result<(), ConfigError> {
        if platform == LookerPlatform::Original {
            return match self.project {
                Some(_) => Err(ConfigError::new(
                    "looker.core.project",
                    "is set but looker.platform is \"original\": set platform = \"core\" (GATEHOUSE_LOOKER_PLATFORM) for Looker (Google Cloud core)",
                )),
                None => Ok(()),
            };
        }
        let project = self.project.as_deref().ok_or_else(|| {
            ConfigError::new(
                "looker.core.project (GATEHOUSE_LOOKER_CORE_PROJECT)",
                "is required with looker.platform = \"core\": the project holding the Looker (Google Cloud core) instance, as projects/PROJECT_ID; people get its login role there",
            )
        })?;
        if !matches!(
            gatehouse_domain::cloud::GcpResource::parse(project),
            Some(gatehouse_domain::cloud::GcpResource::Project { .. })
        ) {
            return Err(ConfigError::new(
                "looker.core.project",
                format!("{project:?} is not projects/PROJECT_ID"),
            ));
        }
        if !self.role.starts_with("roles/") && !self.role.starts_with("projects/") {
            return Err(ConfigError::new(
                "looker.core.role",
                format!("{:?} is not roles/NAME or projects/P/roles/NAME", self.role),
            ));
        }
        if !gcp_enabled {
            return Err(ConfigError::new(
                "looker.platform",
                "\"core\" needs the GCP target ([gcp] enabled = true): the login binding (roles/looker.instanceUser) is granted and removed through it",
            ));
        }
        if self.first_login_interval.is_zero() || self.first_login_interval > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "looker.core.first_login_interval",
                "must be more than 0 and at most 1 day",
            ));
        }
        if !(1..=1000).contains(&self.first_login_page_size) {
            return Err(ConfigError::new(
                "looker.core.first_login_page_size",
                "must be 1 to 1000",
            ));
        }
        Ok(())
    }
}
