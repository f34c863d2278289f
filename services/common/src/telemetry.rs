//! Logging and metrics set-up, once per process.
//!
//! Logs are `tracing` events: human-readable text locally, one JSON object per line in
//! containers (`BEEHIVE_LOG_FORMAT=json`). Metrics go to one global Prometheus recorder
//! whose text the admin server renders at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LoadReport, LogFormat, Settings};

/// The OTLP tracer provider, kept so that buffered spans are flushed at exit.
static TRACER_PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// Installs the global tracing subscriber. `RUST_LOG` overrides `BEEHIVE_LOG_LEVEL`.
/// With `otlp_endpoint` (an OTLP/HTTP collector such as `http://collector:4318`),
/// spans are also exported there in batches. Calling it twice (tests) keeps the first
/// subscriber.
pub fn init_logging(format: LogFormat, default_level: &str, otlp_endpoint: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let otlp = otlp_endpoint.and_then(otlp_layer);
    let registry = tracing_subscriber::registry().with(filter).with(otlp);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(true)
                    // Colour codes only for a terminal, never into log files.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    };
    if result.is_err() {
        tracing::debug!("tracing subscriber already installed");
    }
}

/// A layer exporting spans to an OTLP/HTTP collector, or `None` (with a message on
/// stderr, since logging is not up yet) when the exporter cannot be built.
fn otlp_layer<S>(endpoint: &str) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let traces_url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url)
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("OTLP export disabled: {error}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("beehive")
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("beehive");
    let _ = TRACER_PROVIDER.set(provider);
    Some(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Flushes and stops the OTLP exporter, if one runs; call before the process exits.
pub fn shutdown_tracing() {
    if let Some(provider) = TRACER_PROVIDER.get()
        && let Err(error) = provider.shutdown()
    {
        eprintln!("flushing OTLP spans failed: {error}");
    }
}

/// Sets up logging from settings and reports what loading them noticed.
pub fn init(settings: &Settings, report: &LoadReport) {
    init_logging(
        settings.log_format,
        &settings.log_level,
        settings.otlp_endpoint.as_deref(),
    );
    for key in &report.unknown_keys {
        tracing::warn!(key = %key, "unknown setting ignored; check its spelling");
    }
    if let Some(endpoint) = &settings.otlp_endpoint {
        tracing::info!(endpoint = %endpoint, "exporting traces over OTLP/HTTP");
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}
