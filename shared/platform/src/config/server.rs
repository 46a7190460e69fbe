//! `admin_listen` and the `[server]` section: the HTTP listeners' timeouts and limits. The
//! defaults are safe for an intake on the public internet; tests shorten them.

use super::ConfigError;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Timeouts and limits of the HTTP listeners (intake and admin).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// A client must send a request's whole header section within this time (also the wait
    /// for the first byte of a new request); otherwise the connection is closed.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Reading the body and answering a request must finish within this time; otherwise the
    /// request is answered 408 and its work cancelled.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open connections on the intake listener; a connection beyond it is closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests one intake (okta, scim, graph, google, generic) handles at once; more are
    /// answered 429 with `Retry-After`, so one flooded intake cannot starve the others.
    #[serde(default = "default_per_source_concurrency")]
    pub per_source_concurrency: usize,
    /// The `Retry-After` a 429 carries.
    #[serde(default = "default_retry_after", with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
            per_source_concurrency: default_per_source_concurrency(),
            retry_after: default_retry_after(),
        }
    }
}

pub(super) fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1024
}
fn default_per_source_concurrency() -> usize {
    64
}
fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least = |field: &str, d: Duration, min: Duration| {
            if d < min {
                Err(ConfigError::new(
                    format!("server.{field}"),
                    format!(
                        "must be at least {}",
                        humantime_serde::re::humantime::format_duration(min)
                    ),
                ))
            } else {
                Ok(())
            }
        };
        at_least(
            "header_read_timeout",
            self.header_read_timeout,
            Duration::from_millis(10),
        )?;
        at_least("request_timeout", self.request_timeout, Duration::from_millis(10))?;
        at_least("retry_after", self.retry_after, Duration::from_secs(1))?;
        if self.max_connections == 0 {
            return Err(ConfigError::new("server.max_connections", "must be at least 1"));
        }
        if self.per_source_concurrency == 0 {
            return Err(ConfigError::new(
                "server.per_source_concurrency",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_bounded_and_valid() {
        let s: ServerConfig = toml::from_str("").unwrap();
        s.validate().unwrap();
        assert_eq!(s.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.max_connections, 1024);
        assert_eq!(default_admin_listen().to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        let s: ServerConfig = toml::from_str("max_connections = 0").unwrap();
        assert_eq!(s.validate().unwrap_err().field, "server.max_connections");
        let s: ServerConfig = toml::from_str("per_source_concurrency = 0").unwrap();
        assert_eq!(s.validate().unwrap_err().field, "server.per_source_concurrency");
        let s: ServerConfig = toml::from_str("header_read_timeout = \"0s\"").unwrap();
        assert_eq!(s.validate().unwrap_err().field, "server.header_read_timeout");
    }
}
