//! Which backends this build holds, and the startup check that the configuration names only
//! those. SQLite (the embedded queue and the SQLite state store) is always built; PostgreSQL,
//! SQS and Pub/Sub each sit behind the cargo feature of the same name (`postgres`, `sqs`,
//! `pubsub`), on in every service's default features (ARCHITECTURE.md, "Cargo features").
//!
//! The configuration itself (`gatehouse-platform`) knows every backend, so a file stays valid
//! whatever was built; a binary built without the backend it names refuses it here, at startup,
//! as a configuration error (exit 64) naming the missing feature, rather than failing later.

use gatehouse_platform::config::{Config, ConfigError, QueueConfig, StateConfig};

/// A backend behind a cargo feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Optional {
    /// The setting that chooses it (`queue.backend`, `state.backend`).
    pub setting: &'static str,
    /// The setting's value, also the environment's (`GATEHOUSE_QUEUE`, `GATEHOUSE_STATE`).
    pub value: &'static str,
    /// The cargo feature that builds it.
    pub feature: &'static str,
    /// Whether this build holds it.
    pub built: bool,
}

/// `[state] backend = "postgres"`: the PostgreSQL state store (feature `postgres`).
pub const POSTGRES: Optional = Optional {
    setting: "state.backend",
    value: "postgres",
    feature: "postgres",
    built: cfg!(feature = "postgres"),
};

/// `[queue] backend = "sqs"`: AWS SQS (feature `sqs`).
pub const SQS: Optional = Optional {
    setting: "queue.backend",
    value: "sqs",
    feature: "sqs",
    built: cfg!(feature = "sqs"),
};

/// `[queue] backend = "pubsub"`: Google Pub/Sub (feature `pubsub`).
pub const PUBSUB: Optional = Optional {
    setting: "queue.backend",
    value: "pubsub",
    feature: "pubsub",
    built: cfg!(feature = "pubsub"),
};

/// Every optional backend.
pub const OPTIONAL: [Optional; 3] = [POSTGRES, SQS, PUBSUB];

impl Optional {
    /// The error a configuration naming this backend gets from a build without it.
    pub fn missing(&self) -> ConfigError {
        ConfigError::new(
            self.setting,
            format!(
                "{:?} needs a gatehouse built with the `{}` feature; this build has {} (build \
                 with the default features, or add `--features {}`)",
                self.value,
                self.feature,
                built_summary(),
                self.feature,
            ),
        )
    }
}

/// The optional backends `cfg` chooses (none for the embedded default).
pub fn named(cfg: &Config) -> Vec<Optional> {
    let mut out = Vec::new();
    match &cfg.queue {
        QueueConfig::Embedded => {}
        QueueConfig::Sqs(_) => out.push(SQS),
        QueueConfig::Pubsub(_) => out.push(PUBSUB),
    }
    match &cfg.state {
        StateConfig::Sqlite => {}
        StateConfig::Postgres(_) => out.push(POSTGRES),
    }
    out
}

/// Refuse a configuration that names a backend this build lacks, naming the feature. Every
/// process runs it before opening anything (the services' `start`, the rotator, the CLI).
pub fn check(cfg: &Config) -> Result<(), ConfigError> {
    check_against(cfg, &OPTIONAL)
}

/// [`check`] against the backends `build` (tests: a build lacking one).
fn check_against(cfg: &Config, build: &[Optional]) -> Result<(), ConfigError> {
    for wanted in named(cfg) {
        let built = build.iter().any(|b| b.built && b.value == wanted.value);
        if !built {
            return Err(Optional { built, ..wanted }.missing());
        }
    }
    Ok(())
}

/// The backends of this build, for the error above: `queue: embedded, sqs; state: sqlite`.
pub fn built_summary() -> String {
    let list = |setting: &str, always: &str| {
        std::iter::once(always)
            .chain(
                OPTIONAL
                    .iter()
                    .filter(|b| b.built && b.setting == setting)
                    .map(|b| b.value),
            )
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "queue: {}; state: {}",
        list("queue.backend", "embedded"),
        list("state.backend", "sqlite")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Config {
        Config::load(None, |k| {
            vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_string())
        })
        .expect("a valid configuration")
    }

    fn sqs() -> Config {
        load(&[
            ("GATEHOUSE_QUEUE", "sqs"),
            ("GATEHOUSE_SQS_QUEUE_URL", "http://127.0.0.1:5000/1/q.fifo"),
        ])
    }

    fn pubsub() -> Config {
        load(&[
            ("GATEHOUSE_QUEUE", "pubsub"),
            ("GATEHOUSE_PUBSUB_TOPIC", "projects/p/topics/t"),
            ("GATEHOUSE_PUBSUB_SUBSCRIPTION", "projects/p/subscriptions/s"),
        ])
    }

    fn postgres() -> Config {
        load(&[
            ("GATEHOUSE_STATE", "postgres"),
            (
                "GATEHOUSE_DATABASE_URL",
                "postgres://gatehouse:pw@127.0.0.1/gatehouse",
            ),
        ])
    }

    #[test]
    fn the_embedded_default_names_no_optional_backend() {
        assert!(named(&Config::defaults()).is_empty());
        assert!(check(&Config::defaults()).is_ok());
    }

    #[test]
    fn a_config_names_the_backends_it_chooses() {
        assert_eq!(named(&sqs()), [SQS]);
        assert_eq!(named(&pubsub()), [PUBSUB]);
        assert_eq!(named(&postgres()), [POSTGRES]);
    }

    #[test]
    fn each_constant_says_whether_this_build_holds_its_feature() {
        assert_eq!(POSTGRES.built, cfg!(feature = "postgres"));
        assert_eq!(SQS.built, cfg!(feature = "sqs"));
        assert_eq!(PUBSUB.built, cfg!(feature = "pubsub"));
    }

    /// Whatever the build: a backend it holds is accepted, one it lacks refused (so this test
    /// means the same in a slim build as in the default one).
    #[test]
    fn this_build_accepts_exactly_the_backends_it_holds() {
        for (cfg, feature) in [
            (sqs(), cfg!(feature = "sqs")),
            (pubsub(), cfg!(feature = "pubsub")),
        ] {
            assert_eq!(check(&cfg).is_ok(), feature, "{:?}", named(&cfg));
        }
        assert_eq!(check(&postgres()).is_ok(), cfg!(feature = "postgres"));
    }

    fn lacking(b: Optional) -> Optional {
        Optional { built: false, ..b }
    }

    /// The check a build without SQS runs: SQS refused naming the feature, as a configuration
    /// error (exit 64), never a panic; the rest of that build still accepted.
    #[test]
    fn the_check_refuses_only_what_the_build_lacks() {
        let having = |b: Optional| Optional { built: true, ..b };
        let no_sqs = [having(POSTGRES), lacking(SQS), having(PUBSUB)];
        let e = check_against(&sqs(), &no_sqs).expect_err("sqs is not built");
        assert_eq!(e.field, "queue.backend");
        assert!(
            e.message
                .starts_with("\"sqs\" needs a gatehouse built with the `sqs` feature"),
            "{e}"
        );
        assert!(check_against(&pubsub(), &no_sqs).is_ok());
        assert!(check_against(&postgres(), &no_sqs).is_ok());
        assert!(check_against(&Config::defaults(), &no_sqs).is_ok());
        let none = OPTIONAL.map(lacking);
        for cfg in [sqs(), pubsub(), postgres()] {
            assert!(check_against(&cfg, &none).is_err(), "{:?}", named(&cfg));
        }
        assert!(check_against(&Config::defaults(), &none).is_ok());
        let e = check_against(&postgres(), &none).expect_err("postgres is not built");
        assert_eq!(e.field, "state.backend");
    }

    /// The refusal's words: the setting, the value and the feature to build with.
    #[test]
    fn a_backend_left_out_is_refused_naming_its_feature() {
        let e = lacking(SQS).missing();
        assert_eq!(e.field, "queue.backend");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "invalid configuration: queue.backend: \"sqs\" needs a gatehouse built with the `sqs` feature; this build has queue: embedded"
            ),
            "{text}"
        );
        assert!(text.ends_with("add `--features sqs`)"), "{text}");
        let e = lacking(POSTGRES).missing();
        assert_eq!(e.field, "state.backend");
        assert!(
            e.message
                .starts_with("\"postgres\" needs a gatehouse built with the `postgres` feature")
        );
        assert!(lacking(PUBSUB).missing().message.contains("`pubsub` feature"));
    }

    #[test]
    fn the_summary_lists_what_is_built_after_the_embedded_defaults() {
        let s = built_summary();
        assert!(s.starts_with("queue: embedded"), "{s}");
        assert!(s.contains("; state: sqlite"), "{s}");
        assert_eq!(s.contains("sqs"), cfg!(feature = "sqs"), "{s}");
        assert_eq!(s.contains("pubsub"), cfg!(feature = "pubsub"), "{s}");
        assert_eq!(s.contains("postgres"), cfg!(feature = "postgres"), "{s}");
    }
}
