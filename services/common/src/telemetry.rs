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
    // The OTLP exporter's HTTP client needs the process's crypto provider (crate::tls).
    crate::tls::install_crypto_provider();
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

/// Bucket bounds (seconds) of every `*_seconds` histogram: latencies from 1 ms (a
/// cached lookup) to 10 s (beyond every deadline), then lags up to 5 minutes.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The recorder's configuration: `*_seconds` histograms are exported as Prometheus
/// histograms with [`SECONDS_BUCKETS`] (so alerts can aggregate them across pods with
/// `histogram_quantile`); other histograms as summaries.
pub fn prometheus_builder() -> PrometheusBuilder {
    let builder = PrometheusBuilder::new();
    match builder.set_buckets_for_metric(
        metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
        SECONDS_BUCKETS,
    ) {
        Ok(builder) => builder,
        // Only an empty bucket list is refused; SECONDS_BUCKETS is not empty.
        Err(error) => {
            tracing::warn!(%error, "histogram buckets refused; exporting summaries");
            PrometheusBuilder::new()
        }
    }
}

/// The kind of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (`_seconds` ones become Prometheus histograms).
    Histogram,
}

/// Every metric family the components export, with its help text (the `# HELP` line
/// `/metrics` shows and `promtool check metrics` requires). A metric missing here is
/// exported without help and fails the scrape check (`services/beehive/tests/metrics_scrape.rs`).
pub const METRICS: &[(&str, Kind, &str)] = &[
    (
        "beehive_grpc_server_request_duration_seconds",
        Kind::Histogram,
        "gRPC requests served, by method and status code, until the response headers.",
    ),
    (
        "beehive_grpc_client_request_duration_seconds",
        Kind::Histogram,
        "gRPC calls made to other components, by method and status code.",
    ),
    (
        "beehive_grpc_in_flight",
        Kind::Gauge,
        "gRPC requests being served.",
    ),
    (
        "beehive_grpc_shed_total",
        Kind::Counter,
        "gRPC requests refused with unavailable because the in-flight limit was reached.",
    ),
    (
        "beehive_http_request_duration_seconds",
        Kind::Histogram,
        "HTTP requests to the gateway, by method, route template and status.",
    ),
    (
        "beehive_ws_frame_duration_seconds",
        Kind::Histogram,
        "Handling of WebSocket client frames, by frame type, until the reply is ready.",
    ),
    (
        "beehive_send_to_ack_seconds",
        Kind::Histogram,
        "From a send frame to its ack (the message committed).",
    ),
    (
        "beehive_ws_open_sockets",
        Kind::Gauge,
        "Open WebSocket connections.",
    ),
    (
        "beehive_ws_upgrades_total",
        Kind::Counter,
        "WebSocket connections accepted.",
    ),
    (
        "beehive_ws_overflows_total",
        Kind::Counter,
        "WebSockets closed because their outgoing queue overflowed.",
    ),
    (
        "beehive_ws_slow_disconnects_total",
        Kind::Counter,
        "WebSockets closed because the client read too slowly.",
    ),
    (
        "beehive_ws_drain_waves_total",
        Kind::Counter,
        "Waves of sockets closed while a gateway drains.",
    ),
    (
        "beehive_push_events_total",
        Kind::Counter,
        "Events consumed by the gateway for live delivery.",
    ),
    (
        "beehive_push_frames_total",
        Kind::Counter,
        "Frames pushed to WebSocket clients.",
    ),
    (
        "beehive_push_rejected_total",
        Kind::Counter,
        "Consumed events that could not be decoded.",
    ),
    (
        "beehive_send_batch_size",
        Kind::Histogram,
        "Sends the message service stored in one statement (group commit).",
    ),
    (
        "beehive_gateway_send_call_size",
        Kind::Histogram,
        "Sends the gateway carried in one SendMessages call.",
    ),
    (
        "beehive_messages_stored_total",
        Kind::Counter,
        "Messages committed.",
    ),
    (
        "beehive_outbox_depth",
        Kind::Gauge,
        "Rows waiting in the message outbox (sampled).",
    ),
    (
        "beehive_outbox_relay_lag_seconds",
        Kind::Histogram,
        "From an outbox row's commit to its publish confirmed by RabbitMQ.",
    ),
    (
        "beehive_outbox_relayed_total",
        Kind::Counter,
        "Outbox rows relayed.",
    ),
    (
        "beehive_outbox_published_total",
        Kind::Counter,
        "Broker messages the outbox relay published (one event batch per destination per relay batch).",
    ),
    (
        "beehive_outbox_events_published_total",
        Kind::Counter,
        "Events the outbox relay published, counted inside its event batches.",
    ),
    (
        "beehive_outbox_dead_total",
        Kind::Counter,
        "Outbox rows moved to the dead table after repeated refusals.",
    ),
    (
        "beehive_outbox_partitions_owned",
        Kind::Gauge,
        "Outbox partitions this relay owns.",
    ),
    (
        "beehive_amqp_publish_duration_seconds",
        Kind::Histogram,
        "Handing a batch of messages to RabbitMQ (basic.publish of each).",
    ),
    (
        "beehive_amqp_confirm_duration_seconds",
        Kind::Histogram,
        "Waiting for RabbitMQ's publisher confirms of a batch.",
    ),
    (
        "beehive_amqp_queue_messages",
        Kind::Gauge,
        "Messages ready in a RabbitMQ queue, by queue (sampled).",
    ),
    (
        "beehive_events_published_total",
        Kind::Counter,
        "Events published to RabbitMQ outside the outbox relay.",
    ),
    (
        "beehive_auth_sessions_opened_total",
        Kind::Counter,
        "Sessions opened (logins).",
    ),
    (
        "beehive_auth_refreshes_total",
        Kind::Counter,
        "Refresh token rotations, by outcome.",
    ),
    (
        "beehive_auth_revocations_total",
        Kind::Counter,
        "Sessions revoked.",
    ),
    (
        "beehive_auth_revocation_publish_failures_total",
        Kind::Counter,
        "Revocations that could not be announced to the gateways.",
    ),
    (
        "beehive_user_registrations_total",
        Kind::Counter,
        "Users registered.",
    ),
    (
        "beehive_user_codes_total",
        Kind::Counter,
        "Email verification codes, by outcome.",
    ),
    (
        "beehive_user_credential_checks_total",
        Kind::Counter,
        "Password checks, by outcome.",
    ),
    (
        "beehive_friend_requests_total",
        Kind::Counter,
        "Friend requests, by outcome.",
    ),
    (
        "beehive_social_notify_failures_total",
        Kind::Counter,
        "Social notifications that could not be published.",
    ),
    (
        "beehive_presence_registrations_total",
        Kind::Counter,
        "Device presence registrations.",
    ),
    (
        "beehive_presence_expired_total",
        Kind::Counter,
        "Presence entries expired.",
    ),
    (
        "beehive_presence_announcements_total",
        Kind::Counter,
        "Presence changes announced.",
    ),
    (
        "beehive_presence_announcements_dropped_total",
        Kind::Counter,
        "Presence announcements dropped under load.",
    ),
    (
        "beehive_presence_announcements_failed_total",
        Kind::Counter,
        "Presence announcements that could not be published.",
    ),
    (
        "beehive_search_documents_indexed_total",
        Kind::Counter,
        "Messages indexed for search.",
    ),
    (
        "beehive_search_events_rejected_total",
        Kind::Counter,
        "Index queue events that could not be used.",
    ),
    (
        "beehive_search_index_lag_seconds",
        Kind::Gauge,
        "Age of the newest message of the last committed index batch.",
    ),
    (
        "beehive_search_indexer_consuming",
        Kind::Gauge,
        "Whether the indexer is consuming its queue (1) or not (0).",
    ),
    (
        "beehive_search_batch_size",
        Kind::Histogram,
        "Events per index commit.",
    ),
    (
        "beehive_search_commit_seconds",
        Kind::Histogram,
        "Duration of an index commit.",
    ),
    (
        "beehive_search_query_seconds",
        Kind::Histogram,
        "Duration of a search query.",
    ),
    (
        "beehive_file_upload_bytes_total",
        Kind::Counter,
        "Bytes written to uploads (tus PATCH bodies) by the file component.",
    ),
    (
        "beehive_file_instant_uploads_total",
        Kind::Counter,
        "Files created by an instant upload (content already stored, POST /files/check).",
    ),
    (
        "beehive_file_dedup_hits_total",
        Kind::Counter,
        "Completed uploads whose content was already stored (one blob, refcount + 1).",
    ),
    (
        "beehive_search_reindex_running",
        Kind::Gauge,
        "1 while a search reindex rebuilds the index from the message history.",
    ),
    (
        "beehive_search_reindex_documents_total",
        Kind::Counter,
        "Messages written into a rebuilding search index.",
    ),
    (
        "beehive_search_reindex_rejected_total",
        Kind::Counter,
        "Messages Elasticsearch refused during a reindex (per-item bulk errors).",
    ),
];

/// Registers the help text of every metric in [`METRICS`] with the installed recorder.
pub fn describe_metrics() {
    for &(name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = prometheus_builder().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe_metrics();
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_unique_and_follow_prometheus_naming() {
        let mut seen = std::collections::BTreeSet::new();
        for &(name, kind, help) in METRICS {
            assert!(seen.insert(name), "{name} listed twice");
            assert!(name.starts_with("beehive_"), "{name}");
            assert!(!help.is_empty(), "{name}");
            assert_eq!(
                name.ends_with("_total"),
                kind == Kind::Counter,
                "{name}: counters and only counters end with _total"
            );
        }
    }

    #[test]
    fn described_metrics_get_help_lines() {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_metrics();
            metrics::histogram!("beehive_send_to_ack_seconds").record(0.003);
        });
        let text = handle.render();
        assert!(
            text.contains("# HELP beehive_send_to_ack_seconds From a send frame"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE beehive_send_to_ack_seconds histogram"),
            "{text}"
        );
    }
}
