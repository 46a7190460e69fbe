//! `[telemetry]`: OpenTelemetry traces over OTLP/HTTP (protobuf). Off unless an endpoint is set,
//! in the file, as `GATEHOUSE_OTLP_ENDPOINT`, or with the standard `OTEL_EXPORTER_OTLP_*`
//! variables. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off again.

use super::ConfigError;
use serde::Deserialize;
use std::time::Duration;

/// Where and how traces are exported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL, e.g. `http://otel-collector:4318`; traces go to `{url}/v1/traces`.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The full traces URL, used as is (wins over `otlp_endpoint`).
    #[serde(default)]
    pub otlp_traces_endpoint: Option<String>,
    /// `service.name` of the exported spans; default: the binary's name.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Share of new traces kept (0.0 to 1.0); a trace started upstream keeps its parent's choice.
    #[serde(default = "default_ratio")]
    pub sample_ratio: f64,
    /// Timeout of one export request.
    #[serde(default = "default_export_timeout", with = "humantime_serde")]
    pub export_timeout: Duration,
    /// Set by `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: nothing is exported.
    #[serde(default)]
    pub disabled: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            otlp_traces_endpoint: None,
            service_name: None,
            sample_ratio: default_ratio(),
            export_timeout: default_export_timeout(),
            disabled: false,
        }
    }
}

fn default_ratio() -> f64 {
    1.0
}

fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The OpenTelemetry variables read (besides `GATEHOUSE_OTLP_ENDPOINT`).
pub const OTEL_ENV_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED",
];

impl TelemetryConfig {
    /// The standard `OTEL_*` variables, then `GATEHOUSE_OTLP_ENDPOINT` (which wins).
    pub fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.otlp_endpoint = Some(v);
        }
        if let Some(v) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            self.otlp_traces_endpoint = Some(v);
        }
        if let Some(v) = set("GATEHOUSE_OTLP_ENDPOINT") {
            self.otlp_endpoint = Some(v);
            self.otlp_traces_endpoint = None;
        }
        for var in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(v) = set(var) {
                if v != "http/protobuf" {
                    return Err(ConfigError::new(
                        var,
                        format!("{v:?} is not supported: gatehouse exports traces as http/protobuf"),
                    ));
                }
                break;
            }
        }
        if let Some(v) = set("OTEL_SERVICE_NAME") {
            self.service_name = Some(v);
        }
        let arg = set("OTEL_TRACES_SAMPLER_ARG");
        let ratio_arg = || -> Result<Option<f64>, ConfigError> {
            arg.as_deref()
                .map(|a| {
                    a.trim().parse::<f64>().map_err(|_| {
                        ConfigError::new("OTEL_TRACES_SAMPLER_ARG", format!("{a:?} is not a number"))
                    })
                })
                .transpose()
        };
        match set("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("traceidratio" | "parentbased_traceidratio") => {
                if let Some(r) = ratio_arg()? {
                    self.sample_ratio = r;
                }
            }
            Some("always_on" | "parentbased_always_on") => self.sample_ratio = 1.0,
            Some("always_off" | "parentbased_always_off") => self.sample_ratio = 0.0,
            Some(other) => {
                return Err(ConfigError::new(
                    "OTEL_TRACES_SAMPLER",
                    format!(
                        "{other:?} is not one of always_on, always_off, traceidratio and their \
                         parentbased_ forms"
                    ),
                ));
            }
        }
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
        {
            self.disabled = true;
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, url) in [
            ("telemetry.otlp_endpoint", &self.otlp_endpoint),
            ("telemetry.otlp_traces_endpoint", &self.otlp_traces_endpoint),
        ] {
            if let Some(u) = url
                && !(u.starts_with("http://") || u.starts_with("https://"))
            {
                return Err(ConfigError::new(field, format!("{u:?} is not an http(s) URL")));
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::new(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        Ok(())
    }

    /// The URL spans are POSTed to, or `None`: traces are off (no exporter is built).
    pub fn traces_url(&self) -> Option<String> {
        if self.disabled {
            return None;
        }
        if let Some(u) = &self.otlp_traces_endpoint {
            return Some(u.clone());
        }
        self.otlp_endpoint
            .as_ref()
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        let mut t = TelemetryConfig::default();
        t.apply_env(&|k| map.get(k).map(|v| v.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    #[test]
    fn no_endpoint_means_no_traces() {
        let t = resolve(&[("OTEL_SERVICE_NAME", "x"), ("OTEL_TRACES_SAMPLER_ARG", "0.5")]).unwrap();
        assert_eq!(t.traces_url(), None);
        assert_eq!(t.service_name.as_deref(), Some("x"));
        assert_eq!(t.sample_ratio, 0.5);
    }

    #[test]
    fn standard_variables_pick_the_url() {
        let t = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap();
        assert_eq!(t.traces_url().as_deref(), Some("http://c:4318/v1/traces"));
        let t = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom"),
        ])
        .unwrap();
        assert_eq!(t.traces_url().as_deref(), Some("http://t:9/custom"));
        let t = resolve(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom"),
            ("GATEHOUSE_OTLP_ENDPOINT", "https://g:4318"),
        ])
        .unwrap();
        assert_eq!(t.traces_url().as_deref(), Some("https://g:4318/v1/traces"));
    }

    #[test]
    fn disabled_wins_over_an_endpoint() {
        for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            let t = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), off]).unwrap();
            assert_eq!(t.traces_url(), None, "{off:?}");
        }
    }

    #[test]
    fn samplers_and_protocols_are_checked() {
        assert_eq!(
            resolve(&[("OTEL_TRACES_SAMPLER", "always_off")])
                .unwrap()
                .sample_ratio,
            0.0
        );
        let e = resolve(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]).unwrap_err();
        assert_eq!(e.field, "OTEL_TRACES_SAMPLER");
        let e = resolve(&[("OTEL_TRACES_SAMPLER_ARG", "half")]).unwrap_err();
        assert_eq!(e.field, "OTEL_TRACES_SAMPLER_ARG");
        let e = resolve(&[("OTEL_TRACES_SAMPLER_ARG", "2")]).unwrap_err();
        assert_eq!(e.field, "telemetry.sample_ratio");
        let e = resolve(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert_eq!(e.field, "OTEL_EXPORTER_OTLP_PROTOCOL");
        resolve(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")]).unwrap();
        let e = resolve(&[("GATEHOUSE_OTLP_ENDPOINT", "collector:4318")]).unwrap_err();
        assert_eq!(e.field, "telemetry.otlp_endpoint");
    }
}
