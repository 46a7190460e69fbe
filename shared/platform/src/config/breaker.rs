//! `[safety.breaker]`: the mass-change circuit breaker (issue 19, item 3). Off unless configured.
//!
//! Each kind of change (offboardings, removals, privileged grants) has its own limits over one
//! sliding window: a count and/or a percentage of the people Gatehouse knows, overall and per
//! source. The change that would cross a limit, and every later change of that kind (overall,
//! or from that source), is held until a person releases or discards it.

use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// The sliding window changes are counted over (e.g. `"1h"`).
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// People who leave (a disable in a target).
    #[serde(default)]
    pub offboardings: Option<Limits>,
    /// Group and role removals (of people who stay).
    #[serde(default)]
    pub removals: Option<Limits>,
    /// Grants of a privileged Looker group or role (see `privileged_groups`/`privileged_roles`).
    #[serde(default)]
    pub privileged_grants: Option<Limits>,
    /// Looker groups whose grant counts as privileged (names, any case).
    #[serde(default)]
    pub privileged_groups: Vec<String>,
    /// Looker roles whose grant counts as privileged (names, any case).
    #[serde(default)]
    pub privileged_roles: Vec<String>,
}

/// The limits of one kind of change within the window. A change that would make a count exceed
/// one of them trips the breaker.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// More than this many changes from all sources together.
    #[serde(default)]
    pub max: Option<u64>,
    /// More than this percentage of the people Gatehouse knows, from all sources together.
    #[serde(default)]
    pub max_percent: Option<f64>,
    /// More than this many changes from one source.
    #[serde(default)]
    pub max_per_source: Option<u64>,
}

fn default_window() -> Duration {
    Duration::from_secs(3600)
}

impl Limits {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.max.is_none() && self.max_percent.is_none() && self.max_per_source.is_none() {
            return Err(ConfigError::new(
                field,
                "sets no limit: give max, max_percent or max_per_source, or leave the section out",
            ));
        }
        if let Some(p) = self.max_percent
            && !(p > 0.0 && p <= 100.0)
        {
            return Err(ConfigError::new(
                format!("{field}.max_percent"),
                "must be above 0 and at most 100",
            ));
        }
        Ok(())
    }
}

impl BreakerConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.window.is_zero() {
            return Err(ConfigError::new(
                "safety.breaker.window",
                "must be longer than zero",
            ));
        }
        let kinds = [
            ("safety.breaker.offboardings", &self.offboardings),
            ("safety.breaker.removals", &self.removals),
            ("safety.breaker.privileged_grants", &self.privileged_grants),
        ];
        if kinds.iter().all(|(_, l)| l.is_none()) {
            return Err(ConfigError::new(
                "safety.breaker",
                "limits nothing: configure offboardings, removals or privileged_grants",
            ));
        }
        for (field, limits) in kinds {
            if let Some(l) = limits {
                l.validate(field)?;
            }
        }
        if self.privileged_grants.is_some()
            && self.privileged_groups.is_empty()
            && self.privileged_roles.is_empty()
        {
            return Err(ConfigError::new(
                "safety.breaker.privileged_grants",
                "needs privileged_groups or privileged_roles to say what is privileged",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<BreakerConfig, ConfigError> {
        let c: BreakerConfig =
            toml::from_str(toml_text).map_err(|e| ConfigError::new("toml", e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn a_section_without_limits_or_privileges_is_refused_naming_the_field() {
        let e = parse("window = \"1h\"\n[offboardings]\n").unwrap_err();
        assert_eq!(e.field, "safety.breaker.offboardings");
        let e = parse("[privileged_grants]\nmax = 3\n").unwrap_err();
        assert_eq!(e.field, "safety.breaker.privileged_grants");
        let e = parse("[removals]\nmax_percent = 0.0\n").unwrap_err();
        assert_eq!(e.field, "safety.breaker.removals.max_percent");
        let e = parse("window = \"1h\"\n").unwrap_err();
        assert_eq!(e.field, "safety.breaker");
        let ok = parse("window = \"10m\"\n[offboardings]\nmax = 20\nmax_per_source = 10\n").unwrap();
        assert_eq!(ok.window, Duration::from_secs(600));
        assert_eq!(ok.offboardings.unwrap().max, Some(20));
    }
}
