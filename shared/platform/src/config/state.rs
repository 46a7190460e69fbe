//! `[state]`: where the processor keeps its state (dedupe, identities, fingerprints, the ledger,
//! scheduled deletions, rotation requests). A tagged enum, like `[queue]`.

use super::ConfigError;
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StateConfig {
    /// SQLite in the data directory (`gatehouse.db`, beside the embedded queue): one machine.
    #[default]
    Sqlite,
    /// PostgreSQL, shared by any number of processor replicas.
    Postgres(PostgresConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database` (a secret: it holds the password). Usually
    /// given as `GATEHOUSE_DATABASE_URL` rather than in the file.
    #[serde(default)]
    pub url: Option<SecretString>,
    /// Connections per process.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    10
}

impl StateConfig {
    /// `GATEHOUSE_STATE` picks the backend; `GATEHOUSE_DATABASE_URL` fills the PostgreSQL URL.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(kind) = env("GATEHOUSE_STATE") {
            match (kind.as_str(), &*self) {
                ("sqlite", _) => *self = StateConfig::Sqlite,
                ("postgres", StateConfig::Postgres(_)) => {}
                ("postgres", StateConfig::Sqlite) => {
                    *self = StateConfig::Postgres(PostgresConfig {
                        url: None,
                        max_connections: default_max_connections(),
                    })
                }
                (other, _) => {
                    return Err(ConfigError::new(
                        "GATEHOUSE_STATE",
                        format!("{other:?} is not one of sqlite, postgres"),
                    ));
                }
            }
        }
        if let Some(url) = env("GATEHOUSE_DATABASE_URL") {
            match self {
                StateConfig::Postgres(p) => p.url = Some(SecretString::from(url)),
                StateConfig::Sqlite => {
                    return Err(ConfigError::new(
                        "GATEHOUSE_DATABASE_URL",
                        "is set but the state backend is sqlite: set GATEHOUSE_STATE=postgres \
                         (or state.backend = \"postgres\")",
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            StateConfig::Sqlite => Ok(()),
            StateConfig::Postgres(p) => {
                use secrecy::ExposeSecret;
                let Some(url) = &p.url else {
                    return Err(ConfigError::new(
                        "state.url (GATEHOUSE_DATABASE_URL)",
                        "is required for the postgres backend",
                    ));
                };
                let u = url.expose_secret();
                if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                    // Never echo the value: it may hold the password.
                    return Err(ConfigError::new(
                        "state.url (GATEHOUSE_DATABASE_URL)",
                        "must be a postgres:// or postgresql:// URL",
                    ));
                }
                if p.max_connections == 0 {
                    return Err(ConfigError::new("state.max_connections", "must be at least 1"));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn default_is_sqlite_and_env_selects_postgres() {
        let mut s = StateConfig::default();
        s.apply_env(&env(&[])).unwrap();
        s.validate().unwrap();
        assert!(matches!(s, StateConfig::Sqlite));
        s.apply_env(&env(&[
            ("GATEHOUSE_STATE", "postgres"),
            (
                "GATEHOUSE_DATABASE_URL",
                "postgres://gh:pw-secret@db:5432/gatehouse",
            ),
        ]))
        .unwrap();
        s.validate().unwrap();
        let StateConfig::Postgres(p) = &s else {
            panic!("{s:?}")
        };
        assert_eq!(
            p.url.as_ref().unwrap().expose_secret(),
            "postgres://gh:pw-secret@db:5432/gatehouse"
        );
        assert_eq!(p.max_connections, 10);
        assert!(
            !format!("{s:?}").contains("pw-secret"),
            "the URL must not reach Debug"
        );
    }

    #[test]
    fn the_file_sets_pool_size_and_env_the_url() {
        let mut s: StateConfig = toml::from_str("backend = \"postgres\"\nmax_connections = 3\n").unwrap();
        assert_eq!(
            s.validate().unwrap_err().field,
            "state.url (GATEHOUSE_DATABASE_URL)"
        );
        s.apply_env(&env(&[("GATEHOUSE_DATABASE_URL", "postgresql://h/db")]))
            .unwrap();
        s.validate().unwrap();
        assert!(matches!(&s, StateConfig::Postgres(p) if p.max_connections == 3));
    }

    #[test]
    fn mistakes_are_named_without_echoing_the_url() {
        let e = StateConfig::default()
            .apply_env(&env(&[("GATEHOUSE_STATE", "mysql")]))
            .unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_STATE");
        let e = StateConfig::default()
            .apply_env(&env(&[("GATEHOUSE_DATABASE_URL", "postgres://x")]))
            .unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_DATABASE_URL");
        let mut s = StateConfig::default();
        s.apply_env(&env(&[
            ("GATEHOUSE_STATE", "postgres"),
            ("GATEHOUSE_DATABASE_URL", "mysql://u:s3cret@h/db"),
        ]))
        .unwrap();
        let e = s.validate().unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let e = toml::from_str::<StateConfig>("backend = \"postgres\"\npool = 3\n").unwrap_err();
        assert!(e.to_string().contains("pool"), "{e}");
        let e = toml::from_str::<StateConfig>(
            "backend = \"postgres\"\nmax_connections = 0\nurl = \"postgres://h/d\"\n",
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "state.max_connections");
    }
}
