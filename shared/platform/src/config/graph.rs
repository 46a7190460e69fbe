//! `[graph]` configuration section: Microsoft Graph change notifications at `/hooks/graph`.

use super::{ConfigError, check_token};
use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

/// Graph's ceiling for `clientState` (characters).
const MAX_CLIENT_STATE: usize = 128;
/// Graph's ceiling for a subscription on users or groups: 41 760 minutes (29 days).
pub const MAX_SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(41_760 * 60);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphConfig {
    /// The secret sent as `clientState` when subscribing; every notification must carry it.
    /// Without it `/hooks/graph` answers 503. Env: `GATEHOUSE_GRAPH_CLIENT_STATE`. 16 to 128
    /// characters, not one character repeated.
    #[serde(default)]
    pub client_state: Option<SecretString>,
    /// Entra tenant (directory) id. Env: `GATEHOUSE_GRAPH_TENANT_ID`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// App registration (client) id. Env: `GATEHOUSE_GRAPH_CLIENT_ID`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// App registration client secret. Env: `GATEHOUSE_GRAPH_CLIENT_SECRET`.
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// Graph base URL, calls go to `{graph_url}/users/{id}` and so on.
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// Token authority; tokens come from `{authority_url}/{tenant_id}/oauth2/v2.0/token`.
    #[serde(default = "default_authority_url")]
    pub authority_url: String,
    /// Public URL of `/hooks/graph`. When set, Gatehouse creates and renews the subscriptions
    /// itself (also used as `lifecycleNotificationUrl`).
    #[serde(default)]
    pub notification_url: Option<String>,
    /// Resources to subscribe to (each gets one subscription).
    #[serde(default = "default_resources")]
    pub resources: Vec<String>,
    /// Change types to subscribe to.
    #[serde(default = "default_change_types")]
    pub change_types: String,
    /// Lifetime asked for when creating or renewing (at most 41 760 minutes for users/groups).
    #[serde(default = "default_lifetime", with = "humantime_serde")]
    pub subscription_lifetime: Duration,
    /// A subscription closer than this to its expiry is renewed.
    #[serde(default = "default_renew_before", with = "humantime_serde")]
    pub renew_before: Duration,
    /// How often subscriptions are checked.
    #[serde(default = "default_renew_interval", with = "humantime_serde")]
    pub renew_interval: Duration,
    /// How often a delta round runs from the stored deltaLinks (besides start-up and `missed`),
    /// so a change Graph failed to notify is still caught (issue 18). Default 15 minutes.
    #[serde(default = "default_delta_interval", with = "humantime_serde")]
    pub delta_interval: Duration,
    /// How often the notification inbox is looked at when idle.
    #[serde(default = "default_inbox_poll", with = "humantime_serde")]
    pub inbox_poll_interval: Duration,
    /// Larger bodies are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Timeout of one Graph or token call.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts at one notification (Graph reads failing) before it is set aside as failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            client_state: None,
            tenant_id: None,
            client_id: None,
            client_secret: None,
            graph_url: default_graph_url(),
            authority_url: default_authority_url(),
            notification_url: None,
            resources: default_resources(),
            change_types: default_change_types(),
            subscription_lifetime: default_lifetime(),
            renew_before: default_renew_before(),
            renew_interval: default_renew_interval(),
            delta_interval: default_delta_interval(),
            inbox_poll_interval: default_inbox_poll(),
            max_body_bytes: default_max_body(),
            timeout: default_timeout(),
            max_attempts: default_max_attempts(),
        }
    }
}

fn default_graph_url() -> String {
    "https://graph.microsoft.com/v1.0".into()
}
fn default_authority_url() -> String {
    "https://login.microsoftonline.com".into()
}
fn default_resources() -> Vec<String> {
    vec!["users".into(), "groups".into()]
}
fn default_change_types() -> String {
    "updated,deleted".into()
}
fn default_lifetime() -> Duration {
    // 28 days: under Graph's 29-day ceiling with room for clock skew.
    Duration::from_secs(28 * 24 * 3600)
}
fn default_renew_before() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_renew_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_delta_interval() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_inbox_poll() -> Duration {
    Duration::from_millis(500)
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_attempts() -> u32 {
    10
}

/// Client credentials for Graph (all three set).
#[derive(Debug, Clone)]
pub struct GraphCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

impl GraphConfig {
    /// Apply `GATEHOUSE_*` overrides for this section.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("GATEHOUSE_GRAPH_CLIENT_STATE") {
            let state = SecretString::from(v);
            check_token("GATEHOUSE_GRAPH_CLIENT_STATE", &state, Some(MAX_CLIENT_STATE))?;
            self.client_state = Some(state);
        }
        if let Some(v) = env("GATEHOUSE_GRAPH_CLIENT_SECRET") {
            self.client_secret = Some(SecretString::from(v));
        }
        if let Some(v) = env("GATEHOUSE_GRAPH_TENANT_ID") {
            self.tenant_id = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_GRAPH_CLIENT_ID") {
            self.client_id = Some(v);
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(cs) = &self.client_state {
            // 16 to 128 characters (Graph's limit), not one character repeated.
            check_token("graph.client_state", cs, Some(MAX_CLIENT_STATE))?;
            // Notifications carry only ids: without credentials nothing could be acted on.
            self.credentials()?.ok_or_else(|| {
                ConfigError::new(
                    "graph.tenant_id",
                    "is missing: client_state needs tenant_id, client_id and client_secret to read Graph",
                )
            })?;
        }
        self.credentials()?;
        for (field, url) in [
            ("graph.graph_url", Some(&self.graph_url)),
            ("graph.authority_url", Some(&self.authority_url)),
            ("graph.notification_url", self.notification_url.as_ref()),
        ] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return Err(ConfigError::new(field, format!("{url:?} is not an http(s) URL")));
            }
        }
        if self.notification_url.is_some() && self.client_state.is_none() {
            return Err(ConfigError::new(
                "graph.client_state (GATEHOUSE_GRAPH_CLIENT_STATE)",
                "is missing: notification_url (managed subscriptions) needs a client_state",
            ));
        }
        if self.subscription_lifetime > MAX_SUBSCRIPTION_LIFETIME
            || self.subscription_lifetime < Duration::from_secs(3600)
        {
            return Err(ConfigError::new(
                "graph.subscription_lifetime",
                "must be between 1h and 41760 minutes (29 days)",
            ));
        }
        if self.renew_before >= self.subscription_lifetime {
            return Err(ConfigError::new(
                "graph.renew_before",
                "must be shorter than graph.subscription_lifetime",
            ));
        }
        if self.resources.iter().any(|r| r.trim().is_empty()) {
            return Err(ConfigError::new(
                "graph.resources",
                "must not contain an empty resource",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::new("graph.max_body_bytes", "must be at least 1024"));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::new("graph.max_attempts", "must be at least 1"));
        }
        if self.renew_interval.is_zero() || self.inbox_poll_interval.is_zero() {
            return Err(ConfigError::new(
                "graph.renew_interval",
                "renew_interval and inbox_poll_interval must be above zero",
            ));
        }
        if self.delta_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("graph.delta_interval", "must be at least 1s"));
        }
        Ok(())
    }

    /// The client credentials, or `None` when none is set. Partial settings are an error.
    pub fn credentials(&self) -> Result<Option<GraphCredentials>, ConfigError> {
        match (&self.tenant_id, &self.client_id, &self.client_secret) {
            (None, None, None) => Ok(None),
            (Some(t), Some(c), Some(s)) => Ok(Some(GraphCredentials {
                tenant_id: t.clone(),
                client_id: c.clone(),
                client_secret: s.clone(),
            })),
            (t, c, _) => {
                let field = if t.is_none() {
                    "graph.tenant_id (GATEHOUSE_GRAPH_TENANT_ID)"
                } else if c.is_none() {
                    "graph.client_id (GATEHOUSE_GRAPH_CLIENT_ID)"
                } else {
                    "graph.client_secret (GATEHOUSE_GRAPH_CLIENT_SECRET)"
                };
                Err(ConfigError::new(
                    field,
                    "is missing: set all of tenant_id, client_id and client_secret",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn parse(text: &str) -> GraphConfig {
        toml::from_str(text).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: &str = "client_state = \"cs-s3cret-0123456789\"\ntenant_id = \"t\"\nclient_id = \"c\"\n\
                        client_secret = \"graph-s3cret\"\n";

    #[test]
    fn defaults_are_inert_and_valid() {
        let c = GraphConfig::default();
        c.validate().unwrap();
        assert!(c.client_state.is_none());
        assert_eq!(c.graph_url, "https://graph.microsoft.com/v1.0");
        assert_eq!(c.renew_before, Duration::from_secs(86_400));
    }

    #[test]
    fn env_sets_the_secrets_and_debug_hides_them() {
        let mut c = parse("tenant_id = \"t\"\nclient_id = \"c\"\n");
        c.apply_env(&env(&[
            ("GATEHOUSE_GRAPH_CLIENT_STATE", "cs-s3cret-0123456789"),
            ("GATEHOUSE_GRAPH_CLIENT_SECRET", "graph-s3cret"),
        ]))
        .unwrap();
        c.validate().unwrap();
        let shown = format!("{c:?} {:?}", c.credentials().unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(c.client_state.unwrap().expose_secret(), "cs-s3cret-0123456789");
    }

    #[test]
    fn client_state_without_credentials_is_named() {
        let e = parse("client_state = \"x-client-state-0123\"\n")
            .validate()
            .unwrap_err();
        assert!(e.field.starts_with("graph.tenant_id"), "{e}");
        let e = parse("client_state = \"x-client-state-0123\"\ntenant_id = \"t\"\n")
            .validate()
            .unwrap_err();
        assert!(e.field.starts_with("graph.client_id"), "{e}");
    }

    #[test]
    fn limits_are_checked() {
        let e = parse(&format!("{FULL}subscription_lifetime = \"30days\"\n"))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "graph.subscription_lifetime");
        let e = parse(&format!("{FULL}renew_before = \"28days\"\n"))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "graph.renew_before");
        let e = parse(&format!("{FULL}graph_url = \"ftp://x\"\n"))
            .validate()
            .unwrap_err();
        assert_eq!(e.field, "graph.graph_url");
        let long = "ab".repeat(65);
        let e = parse(&FULL.replace("cs-s3cret-0123456789", &long))
            .validate()
            .unwrap_err();
        assert!(e.field.starts_with("graph.client_state"));
        // Issue 11, finding 1: one character was enough.
        for weak in ["", "x", "0123456789abcde", "qqqqqqqqqqqqqqqqqqqq"] {
            let e = parse(&FULL.replace("cs-s3cret-0123456789", weak))
                .validate()
                .unwrap_err();
            assert_eq!(e.field, "graph.client_state", "{weak:?}");
            let e = GraphConfig::default()
                .apply_env(&env(&[("GATEHOUSE_GRAPH_CLIENT_STATE", weak)]))
                .unwrap_err();
            assert_eq!(e.field, "GATEHOUSE_GRAPH_CLIENT_STATE", "{weak:?}");
        }
        let e = parse("notification_url = \"https://x/hooks/graph\"\n")
            .validate()
            .unwrap_err();
        assert!(e.field.starts_with("graph.client_state"), "{e}");
        parse(FULL).validate().unwrap();
    }

    #[test]
    fn unknown_field_is_refused() {
        assert!(toml::from_str::<GraphConfig>("clientstate = \"x\"\n").is_err());
    }
}
