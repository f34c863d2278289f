//! Beehive's search component: consumes the index queue, bulk-indexes messages, and
//! answers `SearchMessages` scoped to what the caller may read (DESIGN.md, Search).
//!
//! Backends sit behind [`backend::Backend`]: `embedded` (tantivy with jieba
//! segmentation, [`backend::embedded`]) and `elasticsearch`. A reindex
//! ([`reindex`]) rebuilds the index from the message service's history and swaps it in.

pub mod analysis;
pub mod backend;
pub mod config;
pub mod cursor;
pub mod grpc;
pub mod highlight;
pub mod indexer;
pub mod query;
pub mod reindex;
pub mod service;

use std::sync::Arc;

use beehive_common::admin::ReadinessCheck;
use beehive_common::grpc::{ClientStack, health_service, server, tokio_stream_shim::TcpIncoming};
use beehive_common::{Bound, Component, ComponentError, Context};
use beehive_proto::v1::message_service_client::MessageServiceClient;
use beehive_proto::v1::search_service_server::SearchServiceServer;
use tokio::net::TcpListener;

pub use config::SearchConfig;

use backend::Backend;
use backend::elasticsearch::ElasticsearchIndex;
use backend::embedded::EmbeddedIndex;

/// Largest request decoded (a query is at most 256 characters).
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest message-service answer decoded.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// How long start-up waits for Elasticsearch to answer (it may be starting too).
const ELASTICSEARCH_START_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Connects to Elasticsearch, retrying with backoff for a while.
async fn connect_elasticsearch(
    ctx: &Context,
    config: &config::ElasticsearchConfig,
) -> Result<ElasticsearchIndex, backend::BackendError> {
    let started = std::time::Instant::now();
    let mut backoff = std::time::Duration::from_millis(250);
    loop {
        match ElasticsearchIndex::connect(config).await {
            Ok(index) => return Ok(index),
            Err(error)
                if started.elapsed() < ELASTICSEARCH_START_PATIENCE
                    && !ctx.shutdown.is_triggered() =>
            {
                tracing::warn!(%error, url = %config.url, ?backoff, "elasticsearch not ready; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Starts the search component on `listener` with the configuration of the settings.
pub async fn bind(ctx: &Context, listener: TcpListener) -> Result<Bound, ComponentError> {
    bind_with(ctx, listener, SearchConfig::from_settings(&ctx.settings)).await
}

/// [`bind`] with an explicit configuration (tests shorten the batching).
pub async fn bind_with(
    ctx: &Context,
    listener: TcpListener,
    config: SearchConfig,
) -> Result<Bound, ComponentError> {
    let failed =
        |e: Box<dyn std::error::Error + Send + Sync>| ComponentError::failed(Component::Search, e);
    let (backend, state_file): (Arc<dyn Backend>, _) = match config.backend.as_str() {
        "embedded" => (
            Arc::new(EmbeddedIndex::open(&config.index_dir).map_err(|e| failed(e.into()))?),
            Some(config.index_dir.join("reindex.json")),
        ),
        "elasticsearch" => {
            let Some(es) = &config.elasticsearch else {
                return Err(ComponentError::Config {
                    component: Component::Search,
                    message: "BEEHIVE_SEARCH_BACKEND=elasticsearch needs BEEHIVE_ELASTICSEARCH_URL"
                        .to_owned(),
                });
            };
            (
                Arc::new(
                    connect_elasticsearch(ctx, es)
                        .await
                        .map_err(|e| failed(e.into()))?,
                ),
                None,
            )
        }
        other => {
            return Err(ComponentError::Config {
                component: Component::Search,
                message: format!("unknown search backend {other:?}; use embedded or elasticsearch"),
            });
        }
    };
    // A history page (the reindex) may be up to ~3.5 MiB.
    let messages = MessageServiceClient::new(
        ClientStack::connect(Component::Message, &ctx.settings, &ctx.shutdown)
            .map_err(|e| failed(e.into()))?,
    )
    .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let indexer = indexer::Indexer::new(&ctx.settings, config.clone(), backend.clone());
    // Declared before serving: from here on every message event is kept for the index.
    indexer.declare().await.map_err(|e| failed(e.into()))?;
    let indexing = tokio::spawn(indexer.run(ctx.shutdown.clone()));
    // Ready when the index can answer. The indexer's state is a metric instead: a
    // broker outage delays indexing but must not take searching out of service.
    let probe_backend = backend.clone();
    let readiness = vec![ReadinessCheck::new("search_index", move || {
        let backend = probe_backend.clone();
        async move { backend.check().await.map_err(|e| e.to_string()) }
    })];

    let reindexer = reindex::Reindexer::new(
        backend.clone(),
        messages.clone(),
        state_file,
        ctx.shutdown.clone(),
        &config,
    );
    let service = service::SearchService::new(backend.clone(), messages);
    let api = grpc::SearchApi::new(service, reindexer);
    let addr = listener.local_addr().map_err(|e| failed(e.into()))?;
    let (_reporter, health) = health_service::<SearchServiceServer<grpc::SearchApi>>().await;
    let router = server(&ctx.settings)
        .add_service(health)
        .add_service(SearchServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES));
    let shutdown = ctx.shutdown.clone();
    tracing::info!(%addr, backend = backend.name(), "search service listening");
    let serve = Box::pin(async move {
        let served = router
            .serve_with_incoming_shutdown(TcpIncoming::new(listener), shutdown.wait_owned())
            .await;
        // The indexer commits what it took before leaving.
        let _ = indexing.await;
        served.map_err(|e| ComponentError::failed(Component::Search, e))
    });
    Ok(Bound {
        component: Component::Search,
        addr,
        readiness,
        serve,
    })
}
