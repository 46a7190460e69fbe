//! `[scim]` configuration section (filled in by the scim intake work).

use super::ConfigError;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimConfig {}

impl ScimConfig {
    /// Apply `GATEHOUSE_*` overrides for this section.
    pub fn apply_env(&mut self, _env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}
