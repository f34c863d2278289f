//! Beehive's file service (`beehive.v1.FileService`): content stored exactly once per
//! SHA-256 with an exact reference count, resumable uploads (the gateway speaks tus
//! 1.0.0 to clients), ranged reads, thumbnails, and the answer to "may user U read
//! file F".
//!
//! State lives in PostgreSQL (schema `file`): blobs, files, uploads and their parts,
//! thumbnails, and the garbage table that makes every storage write crash-safe. Bytes
//! live in a directory or an S3-compatible bucket ([`storage`]). A sweeper in every
//! replica removes expired uploads, content no file references any more (after a grace
//! period), and the objects of both.

pub mod config;
pub mod grpc;
pub mod service;
pub mod storage;
pub mod store;
pub mod thumbnail;
pub mod upload;

use std::sync::Arc;

use beehive_common::admin::ReadinessCheck;
use beehive_common::grpc::{ClientStack, health_service, server, tokio_stream_shim::TcpIncoming};
use beehive_common::{Bound, Component, ComponentError, Context, Shutdown};
use beehive_proto::v1::file_service_server::FileServiceServer;
use beehive_proto::v1::message_service_client::MessageServiceClient;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

pub use config::FileConfig;
pub use service::FileService;

/// The `file` schema's migrations (versions 7000001+).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Starts the file service on `listener` with the configuration derived from the
/// settings, and its sweeper.
pub async fn bind(ctx: &Context, listener: TcpListener) -> Result<Bound, ComponentError> {
    let config = FileConfig::from_settings(&ctx.settings)
        .map_err(|e| ComponentError::failed(Component::File, e))?;
    bind_with(ctx, listener, config).await
}

/// [`bind`] with an explicit configuration (tests shorten expiry and grace).
pub async fn bind_with(
    ctx: &Context,
    listener: TcpListener,
    config: FileConfig,
) -> Result<Bound, ComponentError> {
    Ok(bind_service(ctx, listener, config).await?.1)
}

/// [`bind_with`], also returning the service itself (tests drive its sweeper).
pub async fn bind_service(
    ctx: &Context,
    listener: TcpListener,
    config: FileConfig,
) -> Result<(Arc<FileService>, Bound), ComponentError> {
    let failed =
        |e: Box<dyn std::error::Error + Send + Sync>| ComponentError::failed(Component::File, e);
    let addr = listener.local_addr().map_err(|e| failed(e.into()))?;
    let pool = ctx.infra.postgres().await?;
    let storage = storage::open(&config.storage)
        .await
        .map_err(|e| failed(e.into()))?;
    let messages = MessageServiceClient::new(
        ClientStack::connect(Component::Message, &ctx.settings, &ctx.shutdown)
            .map_err(|e| failed(e.into()))?,
    );
    let kind = storage.kind();
    let service = Arc::new(FileService::new(
        store::Store::new(pool.clone()),
        storage,
        messages,
        config.clone(),
    ));
    tokio::spawn(sweeper(service.clone(), ctx.shutdown.clone()));
    let (_reporter, health) = health_service::<FileServiceServer<grpc::FileGrpc>>().await;
    // A PATCH streams for as long as its client sends: the server's deadline is the
    // stream timeout, not the deadline of ordinary calls.
    let mut settings = ctx.settings.clone();
    settings.grpc_timeout = config.stream_timeout;
    let router = server(&settings)
        .add_service(health)
        .add_service(FileServiceServer::new(grpc::FileGrpc::new(service.clone())));
    let shutdown = ctx.shutdown.clone();
    tracing::info!(%addr, storage = kind, max_size = config.max_size, "file service listening");
    let serve = Box::pin(async move {
        router
            .serve_with_incoming_shutdown(TcpIncoming::new(listener), shutdown.wait_owned())
            .await
            .map_err(|e| ComponentError::failed(Component::File, e))
    });
    Ok((
        service,
        Bound {
            component: Component::File,
            addr,
            readiness: vec![ReadinessCheck::postgres(pool)],
            serve,
        },
    ))
}

/// Sweeps every `sweep_interval` until shutdown. Every replica may run it: rows are
/// taken with SKIP LOCKED and object deletes are idempotent.
async fn sweeper(service: Arc<FileService>, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(service.config().sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        match service.sweep(chrono::Utc::now()).await {
            Ok(report) if report != service::SweepReport::default() => {
                tracing::info!(
                    expired_uploads = report.expired_uploads,
                    dropped_blobs = report.dropped_blobs,
                    deleted_objects = report.deleted_objects,
                    unfinished_writes = report.unfinished_writes,
                    "file sweep"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "file sweep failed"),
        }
    }
}
