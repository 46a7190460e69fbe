//! `[okta.api]`: the Okta management API client Gatehouse reads the System Log with (the
//! catch-up of events its Event Hook missed). Off unless both `url` and `api_token` are set.

use super::{ConfigError, check_token};
use secrecy::SecretString;
use serde::Deserialize;
use std::time::Duration;

/// How far back Okta keeps the System Log.
pub const OKTA_LOG_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Okta's ceiling for `limit` on `/api/v1/logs`.
pub const MAX_LOG_PAGE: u32 = 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaApiConfig {
    /// The org's base URL, e.g. `https://acme.okta.com`; calls go to `{url}/api/v1/...`.
    /// Env: `GATEHOUSE_OKTA_URL`.
    #[serde(default)]
    pub url: Option<String>,
    /// An Okta API token (sent as `Authorization: SSWS <token>`; a read-only admin's token is
    /// enough for the System Log). At least 16 characters. Env: `GATEHOUSE_OKTA_API_TOKEN`.
    #[serde(default)]
    pub api_token: Option<SecretString>,
    /// Instead of `api_token`: the client id of an Okta API Services app (OAuth 2.0 client
    /// credentials with `private_key_jwt`, scopes `okta.logs.read okta.users.read
    /// okta.groups.read`). Env: `GATEHOUSE_OKTA_CLIENT_ID`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The service app's RSA private key, PEM (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA
    /// PRIVATE KEY`), in a file readable by Gatehouse only. Env `GATEHOUSE_OKTA_PRIVATE_KEY` (the
    /// PEM itself) wins over the file.
    #[serde(default)]
    pub private_key_file: Option<std::path::PathBuf>,
    #[serde(skip)]
    pub private_key: Option<SecretString>,
    /// The `kid` of the key registered at Okta (sent in the assertion's header), if set.
    #[serde(default)]
    pub key_id: Option<String>,
    /// How often the System Log is polled after the catch-up at start.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// With no stored cursor (first start), how far back the first catch-up reads. At most 90
    /// days: Okta keeps the System Log that long.
    #[serde(default = "default_initial_lookback", with = "humantime_serde")]
    pub initial_lookback: Duration,
    /// Events asked for per page (`limit`, 1 to 1000).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Timeout of one API call (Okta gives a System Log query 30 s).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the directory (users, the policy's groups and attributes) is imported after
    /// the import at start (docs/intake-okta.md). Only when the policy names an Okta group or
    /// profile attribute.
    #[serde(default = "default_import_interval", with = "humantime_serde")]
    pub import_interval: Duration,
    /// How long a person's profile read to enrich a hook event is reused.
    #[serde(default = "default_enrich_ttl", with = "humantime_serde")]
    pub enrich_ttl: Duration,
    /// At most this many people's profiles are cached for enrichment (least recently used go).
    #[serde(default = "default_enrich_cache")]
    pub enrich_cache: usize,
}

impl Default for OktaApiConfig {
    fn default() -> Self {
        OktaApiConfig {
            url: None,
            api_token: None,
            client_id: None,
            private_key_file: None,
            private_key: None,
            key_id: None,
            poll_interval: default_poll_interval(),
            initial_lookback: default_initial_lookback(),
            page_size: default_page_size(),
            timeout: default_timeout(),
            import_interval: default_import_interval(),
            enrich_ttl: default_enrich_ttl(),
            enrich_cache: default_enrich_cache(),
        }
    }
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_initial_lookback() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_page_size() -> u32 {
    MAX_LOG_PAGE
}
fn default_import_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_enrich_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_enrich_cache() -> usize {
    10_000
}
fn default_timeout() -> Duration {
    Duration::from_secs(35)
}

/// An Okta API Services app (OAuth 2.0 client credentials, `private_key_jwt`).
#[derive(Debug, Clone)]
pub struct OktaServiceApp {
    /// Without a trailing `/`.
    pub url: String,
    pub client_id: String,
    /// PEM; never logged (`SecretString`).
    pub private_key: SecretString,
    pub key_id: Option<String>,
}

/// The API connection, when configured.
#[derive(Debug, Clone)]
pub struct OktaApiConnection {
    /// Without a trailing `/`.
    pub url: String,
    pub api_token: SecretString,
}

impl OktaApiConfig {
    pub(super) fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("GATEHOUSE_OKTA_URL") {
            self.url = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_OKTA_CLIENT_ID") {
            self.client_id = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_OKTA_PRIVATE_KEY") {
            self.private_key = Some(SecretString::from(v));
        }
        if let Some(v) = env("GATEHOUSE_OKTA_API_TOKEN") {
            let token = SecretString::from(v);
            check_token("GATEHOUSE_OKTA_API_TOKEN", &token, None)?;
            self.api_token = Some(token);
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.api_token {
            check_token("okta.api.api_token", t, None)?;
        }
        self.connection()?;
        self.service_app()?;
        if let Some(url) = &self.url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::new(
                "okta.api.url (GATEHOUSE_OKTA_URL)",
                format!("{url:?} is not an http(s) URL such as https://acme.okta.com"),
            ));
        }
        if self.poll_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("okta.api.poll_interval", "must be at least 1s"));
        }
        if self.initial_lookback > OKTA_LOG_RETENTION {
            return Err(ConfigError::new(
                "okta.api.initial_lookback",
                "must be at most 90 days: Okta keeps the System Log that long",
            ));
        }
        if !(1..=MAX_LOG_PAGE).contains(&self.page_size) {
            return Err(ConfigError::new("okta.api.page_size", "must be 1 to 1000"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("okta.api.timeout", "must be more than 0"));
        }
        if self.import_interval < Duration::from_secs(60) {
            return Err(ConfigError::new(
                "okta.api.import_interval",
                "must be at least 1m",
            ));
        }
        if self.enrich_cache == 0 {
            return Err(ConfigError::new("okta.api.enrich_cache", "must be at least 1"));
        }
        Ok(())
    }

    /// The service app, `None` unless `client_id` is set; it needs `url` and a private key, and
    /// excludes `api_token`.
    pub fn service_app(&self) -> Result<Option<OktaServiceApp>, ConfigError> {
        let Some(client_id) = &self.client_id else {
            if self.private_key.is_some() || self.private_key_file.is_some() {
                return Err(ConfigError::new(
                    "okta.api.client_id (GATEHOUSE_OKTA_CLIENT_ID)",
                    "is missing: a private key is set for a service app",
                ));
            }
            return Ok(None);
        };
        if client_id.trim().is_empty() || !client_id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "okta.api.client_id (GATEHOUSE_OKTA_CLIENT_ID)",
                "must be the service app's client id (visible characters, no spaces)",
            ));
        }
        if self.api_token.is_some() {
            return Err(ConfigError::new(
                "okta.api.client_id (GATEHOUSE_OKTA_CLIENT_ID)",
                "and okta.api.api_token are both set: use the service app or the api token, not both",
            ));
        }
        let Some(url) = &self.url else {
            return Err(ConfigError::new(
                "okta.api.url (GATEHOUSE_OKTA_URL)",
                "is missing: a service app needs the org url",
            ));
        };
        let private_key = match (&self.private_key, &self.private_key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(path)) => SecretString::from(std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    "okta.api.private_key_file",
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            })?),
            (None, None) => {
                return Err(ConfigError::new(
                    "okta.api.private_key_file (GATEHOUSE_OKTA_PRIVATE_KEY)",
                    "is missing: a service app needs its private key",
                ));
            }
        };
        Ok(Some(OktaServiceApp {
            url: url.trim_end_matches('/').to_string(),
            client_id: client_id.clone(),
            private_key,
            key_id: self.key_id.clone(),
        }))
    }

    /// The connection, `None` when the API is not configured; one of the two alone is an error
    /// naming the missing one.
    pub fn connection(&self) -> Result<Option<OktaApiConnection>, ConfigError> {
        match (&self.url, &self.api_token) {
            (None, None) => Ok(None),
            (Some(_), None) if self.client_id.is_some() => Ok(None),
            (Some(url), Some(token)) => Ok(Some(OktaApiConnection {
                url: url.trim_end_matches('/').to_string(),
                api_token: token.clone(),
            })),
            (None, Some(_)) => Err(ConfigError::new(
                "okta.api.url (GATEHOUSE_OKTA_URL)",
                "is missing: set both url and api_token, or neither",
            )),
            (Some(_), None) => Err(ConfigError::new(
                "okta.api.api_token (GATEHOUSE_OKTA_API_TOKEN)",
                "is missing: set both url and api_token, or neither",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use secrecy::ExposeSecret;
    use std::io::Write;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    fn load(toml: &str) -> Result<Config, super::ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(toml.as_bytes()).unwrap();
        Config::load(Some(f.path()), env(&[]))
    }

    #[test]
    fn off_by_default_and_both_or_neither() {
        let cfg = Config::load(None, env(&[])).unwrap();
        assert!(cfg.okta.api.connection().unwrap().is_none());
        let e = load("[okta.api]\nurl = \"https://acme.okta.com\"\n").unwrap_err();
        assert_eq!(e.field, "okta.api.api_token (GATEHOUSE_OKTA_API_TOKEN)");
        let e = Config::load(
            None,
            env(&[("GATEHOUSE_OKTA_API_TOKEN", "00Ab-okta-api-token-123")]),
        )
        .unwrap_err();
        assert_eq!(e.field, "okta.api.url (GATEHOUSE_OKTA_URL)");
        let cfg = Config::load(
            None,
            env(&[
                ("GATEHOUSE_OKTA_URL", "https://acme.okta.com/"),
                ("GATEHOUSE_OKTA_API_TOKEN", "00Ab-okta-api-token-123"),
            ]),
        )
        .unwrap();
        let c = cfg.okta.api.connection().unwrap().unwrap();
        assert_eq!(c.url, "https://acme.okta.com");
        assert_eq!(c.api_token.expose_secret(), "00Ab-okta-api-token-123");
        assert!(
            !format!("{cfg:?}").contains("00Ab-okta-api-token-123"),
            "debug hides the token"
        );
    }

    #[test]
    fn a_service_app_needs_url_and_key_excludes_the_token_and_hides_the_key() {
        let pem = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ib2R5LTEyMzQ=\n-----END PRIVATE KEY-----\n";
        let cfg = Config::load(
            None,
            env(&[
                ("GATEHOUSE_OKTA_URL", "https://acme.okta.com/"),
                ("GATEHOUSE_OKTA_CLIENT_ID", "0oa1gatehouse"),
                ("GATEHOUSE_OKTA_PRIVATE_KEY", pem),
            ]),
        )
        .unwrap();
        assert!(cfg.okta.api.connection().unwrap().is_none(), "no ssws token");
        let app = cfg.okta.api.service_app().unwrap().unwrap();
        assert_eq!(
            (app.url.as_str(), app.client_id.as_str()),
            ("https://acme.okta.com", "0oa1gatehouse")
        );
        assert!(
            !format!("{cfg:?} {app:?}").contains("c2VjcmV0"),
            "debug hides the key"
        );

        let e = Config::load(
            None,
            env(&[
                ("GATEHOUSE_OKTA_URL", "https://acme.okta.com"),
                ("GATEHOUSE_OKTA_CLIENT_ID", "0oa1"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.field, "okta.api.private_key_file (GATEHOUSE_OKTA_PRIVATE_KEY)");
        let e = Config::load(
            None,
            env(&[
                ("GATEHOUSE_OKTA_URL", "https://acme.okta.com"),
                ("GATEHOUSE_OKTA_CLIENT_ID", "0oa1"),
                ("GATEHOUSE_OKTA_PRIVATE_KEY", pem),
                ("GATEHOUSE_OKTA_API_TOKEN", "00Ab-okta-api-token-123"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.field, "okta.api.client_id (GATEHOUSE_OKTA_CLIENT_ID)");
        let e = load("[okta.api]\nurl = \"https://a.okta.com\"\nclient_id = \"0oa1\"\nprivate_key_file = \"/nonexistent/key.pem\"\n")
            .unwrap_err();
        assert_eq!(e.field, "okta.api.private_key_file");
        let e = Config::load(None, env(&[("GATEHOUSE_OKTA_PRIVATE_KEY", pem)])).unwrap_err();
        assert_eq!(e.field, "okta.api.client_id (GATEHOUSE_OKTA_CLIENT_ID)");
        assert!(!e.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn weak_tokens_and_bad_values_name_the_field_never_the_secret() {
        for weak in ["", "short-token", "aaaaaaaaaaaaaaaaaaaa"] {
            let e = Config::load(None, env(&[("GATEHOUSE_OKTA_API_TOKEN", weak)])).unwrap_err();
            assert_eq!(e.field, "GATEHOUSE_OKTA_API_TOKEN", "{weak:?}");
            let e = load(&format!(
                "[okta.api]\nurl = \"https://a.okta.com\"\napi_token = {weak:?}\n"
            ))
            .unwrap_err();
            assert_eq!(e.field, "okta.api.api_token", "{weak:?}");
            if !weak.is_empty() {
                assert!(!e.to_string().contains(weak), "{e}");
            }
        }
        let ok = "url = \"https://a.okta.com\"\napi_token = \"00Ab-okta-api-token-123\"\n";
        for (extra, field) in [
            ("poll_interval = \"0s\"", "okta.api.poll_interval"),
            ("initial_lookback = \"91days\"", "okta.api.initial_lookback"),
            ("page_size = 1001", "okta.api.page_size"),
            ("page_size = 0", "okta.api.page_size"),
        ] {
            let e = load(&format!("[okta.api]\n{ok}{extra}\n")).unwrap_err();
            assert_eq!(e.field, field, "{extra}");
        }
        let e = load("[okta.api]\nurl = \"acme.okta.com\"\napi_token = \"00Ab-okta-api-token-123\"\n")
            .unwrap_err();
        assert_eq!(e.field, "okta.api.url (GATEHOUSE_OKTA_URL)");
        assert!(load(&format!("[okta.api]\n{ok}initial_lookback = \"90days\"\n")).is_ok());
    }
}
