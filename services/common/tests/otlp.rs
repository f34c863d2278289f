//! Spans reach an OTLP/HTTP collector when `BEEHIVE_OTLP_ENDPOINT` is set. The
//! collector is a small in-test HTTP server (no collector runs here); the test checks
//! that the exporter POSTs a protobuf trace export to `/v1/traces` on flush.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use beehive_common::config::LogFormat;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_the_collector() {
    let received: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                sink.lock().expect("lock").push((content_type, body.len()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    beehive_common::telemetry::init_logging(
        LogFormat::Json,
        "info",
        Some(&format!("http://{addr}")),
    );
    tracing::info_span!("send_message", conversation = "c1").in_scope(|| {
        tracing::info!("inside a span");
    });
    // Flushing blocks on the exporter's HTTP call, which our runtime must serve.
    tokio::task::spawn_blocking(beehive_common::telemetry::shutdown_tracing)
        .await
        .expect("flush");

    let received = received.lock().expect("lock").clone();
    assert!(!received.is_empty(), "the collector got no export");
    assert!(received[0].0.contains("protobuf"), "{received:?}");
    assert!(received[0].1 > 0);
}
