//! Logging (tracing, text or JSON), OpenTelemetry traces (optional, OTLP/HTTP protobuf) and the
//! Prometheus recorder.
//!
//! Traces are off unless `[telemetry]` (or `OTEL_EXPORTER_OTLP_ENDPOINT`, ...) names an endpoint:
//! then Gatehouse's own `info` spans (targets `gatehouse*`) go through a batch span processor on
//! the tokio runtime to `{endpoint}/v1/traces`. [`Telemetry::shutdown`] flushes what is queued.
//! The log filter (`log.level`, `RUST_LOG`) applies to the logs only.

use crate::config::{LogConfig, LogFormat, TelemetryConfig};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;
use std::time::Duration;
use tracing::field::Field;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::field::delimited::Delimited;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{FieldFn, Writer, debug_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The spans exported: Gatehouse's own crates (`gatehouse_*` targets) at `info` and above.
const TRACED_TARGETS: &str = "gatehouse";
/// The W3C trace-context header name, also the key of an envelope's trace parent.
const TRACEPARENT: &str = "traceparent";

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("otlp exporter: {0}")]
    Exporter(String),
    #[error("otlp exporter needs a running tokio runtime")]
    NoRuntime,
}

/// What [`init`] installed. Call [`Telemetry::shutdown`] before exit so queued spans are sent.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Build the exporter when `cfg` names an endpoint (see [`tracer_provider`]); install
    /// nothing. [`init`] is this plus the global subscriber.
    pub fn new(cfg: &TelemetryConfig, service: &str) -> Result<Telemetry, TelemetryError> {
        Ok(Telemetry {
            provider: tracer_provider(cfg, service)?,
        })
    }

    /// Whether an OTLP exporter was built (an endpoint is configured).
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// The layer exporting Gatehouse's spans, or `None` when traces are off.
    pub fn layer<S>(&self) -> Option<impl Layer<S> + Send + Sync + 'static>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        self.provider.as_ref().map(otel_layer)
    }

    /// Export every finished span still queued, then stop the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        // The SDK blocks the calling thread until its batch task (on the runtime) has exported:
        // wait on a blocking thread so a current-thread runtime can run that task meanwhile.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces failed"),
            Err(e) => tracing::warn!(error = %e, "flushing traces panicked"),
        }
    }
}

/// The OTLP tracer provider for `cfg`, or `None` when no endpoint is configured (nothing is
/// built, nothing is sent). Needs a tokio runtime: the batch processor is a task on it.
pub fn tracer_provider(
    cfg: &TelemetryConfig,
    service: &str,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let Some(url) = cfg.traces_url() else {
        return Ok(None);
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoRuntime);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(cfg.export_timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let batch = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(2))
                .with_max_export_timeout(cfg.export_timeout)
                .build(),
        )
        .build();
    let resource = Resource::builder_empty()
        .with_service_name(cfg.service_name.clone().unwrap_or_else(|| service.to_string()))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(resource)
            .build(),
    ))
}

/// The tracing layer that turns Gatehouse's spans into OpenTelemetry spans of `provider`.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("gatehouse"))
        .with_location(false)
        .with_threads(false)
        .with_filter(Targets::new().with_target(TRACED_TARGETS, tracing::Level::INFO))
}

/// Install the global tracing subscriber: logs to stderr (`RUST_LOG` wins over the configured
/// level) and, when an OTLP endpoint is configured, the trace exporter. `service` is the
/// default `service.name`. With traces on, call it inside the tokio runtime.
pub fn init(
    log: &LogConfig,
    telemetry: &TelemetryConfig,
    service: &str,
) -> Result<Telemetry, TelemetryError> {
    let telemetry = Telemetry::new(telemetry, service)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let logs = match log.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(escaped_text_fields())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(telemetry.layer())
        .try_init();
    Ok(telemetry)
}

type FieldWriter = fn(&mut Writer<'_>, &Field, &dyn fmt::Debug) -> fmt::Result;

/// The text format's field formatter: the default layout (the message, then `name=value`
/// separated by spaces) with every control and invisible format character of every value
/// escaped as `\u{..}`, so a payload string (a SCIM email with a newline, an ANSI sequence, a
/// bidi override) can neither forge a log line nor hide text. tracing-subscriber itself escapes
/// only ANSI sequences, and only in the message: `%value` fields were written raw. (JSON logs
/// are escaped by the JSON encoder.)
pub fn escaped_text_fields() -> Delimited<&'static str, FieldFn<FieldWriter>> {
    debug_fn(write_escaped_field as FieldWriter).delimited(" ")
}

fn write_escaped_field(w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    if field.name() != "message" {
        write!(w, "{}=", field.name())?;
    }
    write!(Escaping(w), "{value:?}")
}

/// Writes through, escaping what [`needs_escape`] names.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if needs_escape(c) {
                write!(self.0, "\\u{{{:x}}}", c as u32)?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Control characters (C0, DEL, C1) and Unicode format characters that change how text
/// displays without showing (bidi overrides and isolates, zero-width characters, BOM).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

/// The W3C `traceparent` of the current span, when it is exported (traces on and sampled in);
/// `None` otherwise. Carried in an envelope from the intake to the processor.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Make `span` (not yet entered) a child of the remote span a `traceparent` names. A malformed
/// value or traces being off leaves `span` as it was.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use, with every metric's help text
/// ([`crate::events::describe`]).
pub fn metrics_handle() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours renders nothing, which
            // tests would notice.
            if metrics::set_global_recorder(recorder).is_ok() {
                crate::events::describe();
            }
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// What a text-format subscriber with our field formatter writes for `f`'s events.
    fn text_log(f: impl FnOnce()) -> String {
        let buf = gatehouse_testkit::logs::LogBuffer::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(escaped_text_fields())
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        buf.text()
    }

    #[test]
    fn text_logs_escape_control_and_format_characters_in_every_field() {
        let email = "eve\n2026-01-01T00:00:00Z  INFO gatehouse: offboarded ceo@example.com";
        let log = text_log(|| {
            tracing::info!(email = %email, name = %"a\u{1b}[2Jb\u{202e}c", other = ?"q\r", n = 3, "accepted\u{7}");
        });
        assert_eq!(log.matches('\n').count(), 1, "one event, one line: {log:?}");
        assert!(
            !log.contains('\u{1b}')
                && !log.contains('\u{202e}')
                && !log.contains('\r')
                && !log.contains('\u{7}'),
            "{log:?}"
        );
        assert!(log.contains("email=eve\\u{a}2026-01-01T00:00:00Z"), "{log:?}");
        assert!(log.contains("name=a\\u{1b}[2Jb\\u{202e}c"), "{log:?}");
        assert!(log.contains("accepted\\u{7}"), "{log:?}");
        assert!(log.contains("n=3") && log.contains("other=\"q\\r\""), "{log:?}");
    }

    #[test]
    fn no_endpoint_builds_no_exporter() {
        // No runtime here: building an exporter would fail with NoRuntime, so `Ok(None)` also
        // shows that nothing was attempted.
        assert!(
            tracer_provider(&TelemetryConfig::default(), "t")
                .unwrap()
                .is_none()
        );
        let off = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:1".into()),
            disabled: true,
            ..TelemetryConfig::default()
        };
        assert!(tracer_provider(&off, "t").unwrap().is_none());
        let on = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:1".into()),
            ..TelemetryConfig::default()
        };
        assert!(matches!(
            tracer_provider(&on, "t"),
            Err(TelemetryError::NoRuntime)
        ));
    }

    #[test]
    fn without_traces_there_is_no_traceparent() {
        let sub = tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().with_test_writer());
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("ingress");
            let _g = span.enter();
            assert_eq!(current_traceparent(), None);
        });
    }

    #[test]
    fn a_traceparent_round_trips_through_a_child_span() {
        let provider = SdkTracerProvider::builder().build();
        let sub = tracing_subscriber::registry().with(otel_layer(&provider));
        tracing::subscriber::with_default(sub, || {
            let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let span = tracing::info_span!(target: "gatehouse_engine::worker", "process");
            set_remote_parent(&span, parent);
            let _g = span.enter();
            let child = current_traceparent().expect("sampled span has a traceparent");
            assert!(
                child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && child.ends_with("-01"),
                "same trace, new span id: {child}"
            );
            assert_ne!(child, parent);
        });
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let provider = SdkTracerProvider::builder().build();
        let sub = tracing_subscriber::registry().with(otel_layer(&provider));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!(target: "gatehouse_engine::worker", "process");
            set_remote_parent(&span, "00-not-a-trace-01");
            let _g = span.enter();
            let tp = current_traceparent().expect("a root span of its own");
            assert_eq!(tp.len(), 55, "{tp}");
        });
    }
}
