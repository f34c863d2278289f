//! Beehive's presence service (`beehive.v1.PresenceService`): which devices of which
//! users are online, on which gateway instance, and when each user was last seen.
//!
//! State lives in Redis (see [`store`]): every connection carries its own expiry,
//! pushed forward by registration and by the gateways' heartbeats, so a gateway that
//! dies without cleaning up stops counting its users online once the TTL passes, and
//! a Redis that lost its data is rebuilt by the next heartbeats. A sweeper in every
//! replica removes expired connections, records last-seen times and announces the
//! resulting offline transitions; registration and unregistration announce theirs.
//! Announcements go to the user's friends through the event bus (see [`announce`]).

#![warn(missing_docs)]

pub mod announce;
pub mod config;
pub mod grpc;
pub mod presence;
pub mod service;
pub mod store;

use std::time::Duration;

use beehive_common::admin::ReadinessCheck;
use beehive_common::events::EventBus;
use beehive_common::grpc::{ClientStack, tokio_stream_shim::TcpIncoming};
use beehive_common::{Bound, Component, ComponentError, Context, Shutdown};
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use beehive_proto::v1::presence_service_server::PresenceServiceServer;
use beehive_proto::v1::social_service_client::SocialServiceClient;
use tokio::net::TcpListener;

pub use config::PresenceConfig;

/// Largest request accepted: a heartbeat of [`presence::MAX_HEARTBEAT_CONNECTIONS`]
/// connections is a few MiB, above tonic's 4 MiB default.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Expired connections handled per sweep script call.
const SWEEP_BATCH: usize = 500;

/// Builds the presence service on `listener` with settings-derived configuration.
pub async fn bind(ctx: &Context, listener: TcpListener) -> Result<Bound, ComponentError> {
    bind_with(ctx, listener, PresenceConfig::from_settings(&ctx.settings)).await
}

/// Builds the presence service with an explicit configuration (tests use a short TTL).
pub async fn bind_with(
    ctx: &Context,
    listener: TcpListener,
    config: PresenceConfig,
) -> Result<Bound, ComponentError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
        ComponentError::failed(Component::Presence, e)
    };
    let addr = listener.local_addr().map_err(|e| failed(e.into()))?;
    let redis = ctx.infra.redis().await?;
    let store = store::Store::new(
        redis.clone(),
        ctx.settings.prefixed("presence:"),
        config.ttl,
    );
    let social = ClientStack::connect(Component::Social, &ctx.settings, &ctx.shutdown)
        .map_err(|e| failed(e.into()))?;
    // Presence routes its own announcements (it owns the routing table); the bus's
    // presence client is never called, but EventBus::new wants one.
    let unused = ClientStack::connect(Component::Presence, &ctx.settings, &ctx.shutdown)
        .map_err(|e| failed(e.into()))?;
    let bus = EventBus::new(&ctx.settings, PresenceServiceClient::new(unused));
    let announcer = announce::spawn(
        announce::Targets {
            store: store.clone(),
            social: SocialServiceClient::new(social),
            bus,
        },
        config.event_queue,
        ctx.shutdown.clone(),
    );
    let service = service::PresenceService::new(store, announcer);
    tokio::spawn(sweep_loop(
        service.clone(),
        config.sweep_interval,
        ctx.shutdown.clone(),
    ));
    let (_health_reporter, health) =
        beehive_common::grpc::health_service::<PresenceServiceServer<grpc::PresenceGrpc>>().await;
    let service = PresenceServiceServer::new(grpc::PresenceGrpc::new(service))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    let settings = ctx.settings.clone();
    let shutdown = ctx.shutdown.clone();
    let serve = async move {
        beehive_common::grpc::server(&settings)
            .add_service(health)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::new(listener), shutdown.wait_owned())
            .await
            .map_err(|e| ComponentError::failed(Component::Presence, e))
    };
    tracing::info!(%addr, ttl = ?config.ttl, "presence service bound");
    Ok(Bound {
        component: Component::Presence,
        addr,
        readiness: vec![ReadinessCheck::redis(redis)],
        serve: Box::pin(serve),
    })
}

/// Removes expired connections every `interval` and announces who went offline.
/// Every replica runs it; the sweep script claims each expired entry atomically, so
/// replicas never announce the same transition twice.
async fn sweep_loop(service: service::PresenceService, interval: Duration, shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        loop {
            match service.sweep(SWEEP_BATCH).await {
                Ok(processed) => {
                    if processed < SWEEP_BATCH {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "presence sweep failed");
                    break;
                }
            }
        }
    }
}
