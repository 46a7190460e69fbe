//! `[queue]`: which queue carries envelopes. A tagged enum, so impossible combinations (an SQS
//! URL on a Pub/Sub queue) cannot be written.

use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum QueueConfig {
    /// SQLite in the data directory (one process, or several on one machine).
    #[default]
    Embedded,
    /// AWS SQS (standard or FIFO). Credentials and endpoints come from the AWS SDK's standard
    /// chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_SQS`, profiles, roles, ...).
    Sqs(SqsConfig),
    /// Google Pub/Sub. `PUBSUB_EMULATOR_HOST` points it at an emulator.
    Pubsub(PubsubConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsConfig {
    /// Envelopes from the intakes (FIFO when the URL ends in `.fifo`).
    pub queue_url: String,
    /// CloudTrail events delivered by EventBridge ("AWS API Call via CloudTrail").
    #[serde(default)]
    pub audit_queue_url: Option<String>,
    /// Long-poll wait of one receive (at most 20 s).
    #[serde(default = "default_wait", with = "humantime_serde")]
    pub wait_time: Duration,
    /// The dead-letter queue `gatehouse dlq` works on; default: the one the queue's
    /// `RedrivePolicy` names.
    #[serde(default)]
    pub dead_letter_queue_url: Option<String>,
    /// The rotation queue: the processors publish rotation requests to it, the rotator consumes
    /// it (issue 12, item 4: the two meet through this queue, not a shared table). Required
    /// when `[[rotator.secrets]]` are declared.
    #[serde(default)]
    pub rotation_queue_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubConfig {
    /// Full topic name `projects/P/topics/T` the intakes publish to.
    pub topic: String,
    /// Full subscription name `projects/P/subscriptions/S` the processor pulls from.
    pub subscription: String,
    /// Subscription receiving the GCP audit-log sink and Secret Manager notifications.
    #[serde(default)]
    pub audit_subscription: Option<String>,
    /// `host:port` of an emulator (set from `PUBSUB_EMULATOR_HOST`); none = Google's endpoint.
    #[serde(default)]
    pub emulator_host: Option<String>,
    /// Topic poison messages are published to, with the reason as an attribute.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// A subscription on the dead-letter topic: what `gatehouse dlq` lists and redrives.
    #[serde(default)]
    pub dead_letter_subscription: Option<String>,
    /// The rotation topic the processors publish rotation requests to, and the rotator's
    /// subscription on it (issue 12, item 4). Both required when `[[rotator.secrets]]` are
    /// declared.
    #[serde(default)]
    pub rotation_topic: Option<String>,
    #[serde(default)]
    pub rotation_subscription: Option<String>,
}

fn default_wait() -> Duration {
    Duration::from_secs(20)
}

impl QueueConfig {
    /// `GATEHOUSE_QUEUE` picks the backend; the other variables fill its fields.
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(kind) = env("GATEHOUSE_QUEUE") {
            let same = matches!(
                (kind.as_str(), &*self),
                ("embedded", QueueConfig::Embedded)
                    | ("sqs", QueueConfig::Sqs(_))
                    | ("pubsub", QueueConfig::Pubsub(_))
            );
            if !same {
                *self = match kind.as_str() {
                    "embedded" => QueueConfig::Embedded,
                    "sqs" => QueueConfig::Sqs(SqsConfig {
                        queue_url: String::new(),
                        audit_queue_url: None,
                        wait_time: default_wait(),
                        dead_letter_queue_url: None,
                        rotation_queue_url: None,
                    }),
                    "pubsub" => QueueConfig::Pubsub(PubsubConfig {
                        topic: String::new(),
                        subscription: String::new(),
                        audit_subscription: None,
                        emulator_host: None,
                        dead_letter_topic: None,
                        dead_letter_subscription: None,
                        rotation_topic: None,
                        rotation_subscription: None,
                    }),
                    other => {
                        return Err(ConfigError::new(
                            "GATEHOUSE_QUEUE",
                            format!("{other:?} is not one of embedded, sqs, pubsub"),
                        ));
                    }
                };
            }
        }
        match self {
            QueueConfig::Embedded => {}
            QueueConfig::Sqs(s) => {
                if let Some(v) = env("GATEHOUSE_SQS_QUEUE_URL") {
                    s.queue_url = v;
                }
                if let Some(v) = env("GATEHOUSE_SQS_AUDIT_QUEUE_URL") {
                    s.audit_queue_url = Some(v);
                }
                if let Some(v) = env("GATEHOUSE_SQS_ROTATION_QUEUE_URL") {
                    s.rotation_queue_url = Some(v);
                }
            }
            QueueConfig::Pubsub(p) => {
                if let Some(v) = env("GATEHOUSE_PUBSUB_TOPIC") {
                    p.topic = v;
                }
                if let Some(v) = env("GATEHOUSE_PUBSUB_SUBSCRIPTION") {
                    p.subscription = v;
                }
                if let Some(v) = env("GATEHOUSE_PUBSUB_AUDIT_SUBSCRIPTION") {
                    p.audit_subscription = Some(v);
                }
                if let Some(v) = env("GATEHOUSE_PUBSUB_ROTATION_TOPIC") {
                    p.rotation_topic = Some(v);
                }
                if let Some(v) = env("GATEHOUSE_PUBSUB_ROTATION_SUBSCRIPTION") {
                    p.rotation_subscription = Some(v);
                }
                if let Some(v) = env("PUBSUB_EMULATOR_HOST") {
                    p.emulator_host = Some(v);
                }
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            QueueConfig::Embedded => Ok(()),
            QueueConfig::Sqs(s) => {
                if !s.queue_url.starts_with("http") {
                    return Err(ConfigError::new(
                        "queue.queue_url (GATEHOUSE_SQS_QUEUE_URL)",
                        "is required for the sqs backend and must be the queue's URL",
                    ));
                }
                if s.wait_time > Duration::from_secs(20) {
                    return Err(ConfigError::new(
                        "queue.wait_time",
                        "SQS long polls wait at most 20s",
                    ));
                }
                Ok(())
            }
            QueueConfig::Pubsub(p) => {
                if !p.topic.starts_with("projects/") || !p.topic.contains("/topics/") {
                    return Err(ConfigError::new(
                        "queue.topic (GATEHOUSE_PUBSUB_TOPIC)",
                        "is required for the pubsub backend: projects/PROJECT/topics/TOPIC",
                    ));
                }
                if !p.subscription.starts_with("projects/") || !p.subscription.contains("/subscriptions/") {
                    return Err(ConfigError::new(
                        "queue.subscription (GATEHOUSE_PUBSUB_SUBSCRIPTION)",
                        "is required for the pubsub backend: projects/PROJECT/subscriptions/SUB",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The rotation queue (issue 12, item 4): the embedded queue always has one (a second named
    /// queue in the same database); SQS and Pub/Sub need it named when secrets are declared
    /// (`rotation_needed`), and a named one must look like what it is.
    pub fn validate_rotation(&self, rotation_needed: bool) -> Result<(), ConfigError> {
        match self {
            QueueConfig::Embedded => Ok(()),
            QueueConfig::Sqs(s) => match &s.rotation_queue_url {
                Some(url) if !url.starts_with("http") => Err(ConfigError::new(
                    "queue.rotation_queue_url (GATEHOUSE_SQS_ROTATION_QUEUE_URL)",
                    "must be the rotation queue's URL",
                )),
                None if rotation_needed => Err(ConfigError::new(
                    "queue.rotation_queue_url (GATEHOUSE_SQS_ROTATION_QUEUE_URL)",
                    "is required when [[rotator.secrets]] are declared: rotation requests travel \
                     from the processor to the rotator on their own queue",
                )),
                _ => Ok(()),
            },
            QueueConfig::Pubsub(p) => {
                let checks = [
                    (
                        &p.rotation_topic,
                        "queue.rotation_topic (GATEHOUSE_PUBSUB_ROTATION_TOPIC)",
                        "/topics/",
                        "projects/PROJECT/topics/TOPIC",
                    ),
                    (
                        &p.rotation_subscription,
                        "queue.rotation_subscription (GATEHOUSE_PUBSUB_ROTATION_SUBSCRIPTION)",
                        "/subscriptions/",
                        "projects/PROJECT/subscriptions/SUB",
                    ),
                ];
                for (value, field, part, shape) in checks {
                    match value {
                        Some(v) if !v.starts_with("projects/") || !v.contains(part) => {
                            return Err(ConfigError::new(field, format!("must be {shape}")));
                        }
                        None if rotation_needed => {
                            return Err(ConfigError::new(
                                field,
                                format!(
                                    "is required when [[rotator.secrets]] are declared ({shape}): \
                                     rotation requests travel from the processor to the rotator \
                                     on their own topic"
                                ),
                            ));
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_selects_and_fills_the_backend() {
        let mut q = QueueConfig::default();
        q.apply_env(&env(&[
            ("GATEHOUSE_QUEUE", "sqs"),
            ("GATEHOUSE_SQS_QUEUE_URL", "http://127.0.0.1:5000/1/q.fifo"),
        ]))
        .unwrap();
        q.validate().unwrap();
        assert!(matches!(&q, QueueConfig::Sqs(s) if s.queue_url.ends_with("q.fifo")));

        let mut q = QueueConfig::default();
        q.apply_env(&env(&[
            ("GATEHOUSE_QUEUE", "pubsub"),
            ("GATEHOUSE_PUBSUB_TOPIC", "projects/p/topics/t"),
            ("GATEHOUSE_PUBSUB_SUBSCRIPTION", "projects/p/subscriptions/s"),
            ("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"),
        ]))
        .unwrap();
        q.validate().unwrap();
        assert!(matches!(&q, QueueConfig::Pubsub(p) if p.emulator_host.as_deref() == Some("127.0.0.1:8085")));
    }

    #[test]
    fn missing_fields_and_unknown_backends_are_named() {
        let mut q = QueueConfig::default();
        q.apply_env(&env(&[("GATEHOUSE_QUEUE", "sqs")])).unwrap();
        assert!(
            q.validate()
                .unwrap_err()
                .field
                .contains("GATEHOUSE_SQS_QUEUE_URL")
        );
        let e = QueueConfig::default()
            .apply_env(&env(&[("GATEHOUSE_QUEUE", "kafka")]))
            .unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_QUEUE");
        let e = toml::from_str::<QueueConfig>("backend = \"sqs\"\nqueue_url = \"x\"\ntopic = \"t\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("topic"), "{e}");
    }

    #[test]
    fn the_rotation_queue_is_required_with_declared_secrets_on_sqs_and_pubsub() {
        QueueConfig::Embedded.validate_rotation(true).unwrap();
        let mut q = QueueConfig::default();
        q.apply_env(&env(&[
            ("GATEHOUSE_QUEUE", "sqs"),
            ("GATEHOUSE_SQS_QUEUE_URL", "http://127.0.0.1:5000/1/q.fifo"),
        ]))
        .unwrap();
        q.validate_rotation(false).unwrap();
        let e = q.validate_rotation(true).unwrap_err();
        assert!(e.field.contains("GATEHOUSE_SQS_ROTATION_QUEUE_URL"), "{e}");
        q.apply_env(&env(&[(
            "GATEHOUSE_SQS_ROTATION_QUEUE_URL",
            "http://127.0.0.1:5000/1/r.fifo",
        )]))
        .unwrap();
        q.validate_rotation(true).unwrap();
        assert!(
            matches!(&q, QueueConfig::Sqs(s) if s.rotation_queue_url.as_deref() == Some("http://127.0.0.1:5000/1/r.fifo"))
        );

        let mut q = QueueConfig::default();
        q.apply_env(&env(&[
            ("GATEHOUSE_QUEUE", "pubsub"),
            ("GATEHOUSE_PUBSUB_TOPIC", "projects/p/topics/t"),
            ("GATEHOUSE_PUBSUB_SUBSCRIPTION", "projects/p/subscriptions/s"),
            ("GATEHOUSE_PUBSUB_ROTATION_TOPIC", "projects/p/topics/rotation"),
        ]))
        .unwrap();
        let e = q.validate_rotation(true).unwrap_err();
        assert!(e.field.contains("GATEHOUSE_PUBSUB_ROTATION_SUBSCRIPTION"), "{e}");
        q.apply_env(&env(&[(
            "GATEHOUSE_PUBSUB_ROTATION_SUBSCRIPTION",
            "projects/p/topics/not-a-subscription",
        )]))
        .unwrap();
        let e = q.validate_rotation(false).unwrap_err();
        assert!(e.field.contains("rotation_subscription"), "{e}");
        q.apply_env(&env(&[(
            "GATEHOUSE_PUBSUB_ROTATION_SUBSCRIPTION",
            "projects/p/subscriptions/rotation",
        )]))
        .unwrap();
        q.validate_rotation(true).unwrap();
    }
}
