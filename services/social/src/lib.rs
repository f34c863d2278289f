//! Beehive's social service: friend requests and friendships (`beehive.v1.SocialService`).
//!
//! Friendships are stored once per direction in PostgreSQL (schema `social`), so the
//! gateway's and message service's friendship checks are single index lookups. Every
//! change between two users runs under that pair's advisory lock, which is what makes
//! "no duplicate pending request" and "an opposite pending request is accepted
//! instead" hold under concurrent calls. New requests and acceptances are announced to
//! the addressee's gateways through the event bus.

#![warn(missing_docs)]

pub mod config;
pub mod friends;
pub mod grpc;
pub mod service;
pub mod store;

use std::sync::Arc;

use beehive_common::admin::ReadinessCheck;
use beehive_common::events::EventBus;
use beehive_common::grpc::{ClientStack, tokio_stream_shim::TcpIncoming};
use beehive_common::{Bound, Component, ComponentError, Context};
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use beehive_proto::v1::social_service_server::SocialServiceServer;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

pub use config::SocialConfig;
use service::SocialService;

/// The social schema's migrations (versions 3000001+).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Builds the social service on `listener`. The presence service (for event routing)
/// is reached at `ctx.settings.component_addr(Component::Presence)`, lazily: social
/// starts and serves even while presence is still coming up.
pub async fn bind(ctx: &Context, listener: TcpListener) -> Result<Bound, ComponentError> {
    bind_with(ctx, listener, SocialConfig::from_settings(&ctx.settings)).await
}

/// [`bind`] with an explicit configuration.
pub async fn bind_with(
    ctx: &Context,
    listener: TcpListener,
    config: SocialConfig,
) -> Result<Bound, ComponentError> {
    let addr = listener
        .local_addr()
        .map_err(|e| ComponentError::failed(Component::Social, e))?;
    let pool = ctx.infra.postgres().await?;
    let failed = |e| ComponentError::failed(Component::Social, e);
    let presence =
        ClientStack::connect(Component::Presence, &ctx.settings, &ctx.shutdown).map_err(failed)?;
    let bus = EventBus::new(&ctx.settings, PresenceServiceClient::new(presence));
    let notifier = Arc::new(service::Notifier::new(bus));
    let social = Arc::new(SocialService::new(
        store::Store::new(pool.clone()),
        Some(notifier),
        config.notify_timeout,
    ));
    tokio::spawn(expiry_sweep(social.clone(), config, ctx.shutdown.clone()));
    let (_health_reporter, health) =
        beehive_common::grpc::health_service::<SocialServiceServer<grpc::SocialGrpc>>().await;
    let service = SocialServiceServer::new(grpc::SocialGrpc::new(social));
    let settings = ctx.settings.clone();
    let shutdown = ctx.shutdown.clone();
    let serve = async move {
        beehive_common::grpc::server(&settings)
            .add_service(health)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::new(listener), shutdown.wait_owned())
            .await
            .map_err(|e| ComponentError::failed(Component::Social, e))
    };
    tracing::info!(%addr, "social service bound");
    Ok(Bound {
        component: Component::Social,
        addr,
        readiness: vec![ReadinessCheck::postgres(pool)],
        serve: Box::pin(serve),
    })
}

/// Marks stale pending requests expired every `config.expiry_sweep_interval`. Every
/// replica may run it: rows locked by another replica are skipped, and the update is
/// idempotent.
async fn expiry_sweep(
    social: Arc<SocialService>,
    config: SocialConfig,
    shutdown: beehive_common::Shutdown,
) {
    let mut ticker = tokio::time::interval(config.expiry_sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let batch = config.expiry_sweep_batch;
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        loop {
            match social.expire_stale_requests(batch).await {
                Ok(n) if n > 0 => {
                    tracing::info!(expired = n, "expired stale friend requests");
                    if n < u64::from(batch) {
                        break;
                    }
                }
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "friend request expiry sweep failed");
                    break;
                }
            }
        }
    }
}
