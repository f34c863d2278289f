//! Beehive's message service: conversations (direct and group) and their membership,
//! messages with a gap-free per-conversation `seq`, delivered/read progress, and the
//! transactional outbox that a relay publishes to RabbitMQ (DESIGN.md's message path).
//!
//! It owns conversations and membership so that a send is one transaction: membership
//! check, seq allocation, the message, the sender's read_seq and the outbox row.

pub mod config;
pub mod conversation;
pub mod grpc;
pub mod relay;
pub mod sender;
pub mod service;
pub mod store;
pub mod view;

use std::sync::Arc;

use beehive_common::admin::ReadinessCheck;
use beehive_common::events::EventBus;
use beehive_common::grpc::{ClientStack, health_service, server, tokio_stream_shim::TcpIncoming};
use beehive_common::{Bound, Component, ComponentError, Context};
use beehive_proto::v1::file_service_client::FileServiceClient;
use beehive_proto::v1::message_service_server::MessageServiceServer;
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use beehive_proto::v1::user_service_client::UserServiceClient;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

pub use config::MessageConfig;
pub use relay::{Relay, RelayConfig};

/// The `message` schema's migrations (versions 4000001+).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Largest request the service decodes: a group creation with 2000 ids or a sync with
/// many cursors stays far below it.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Starts the message service on `listener` with the configuration derived from the
/// settings, including its outbox relay.
pub async fn bind(ctx: &Context, listener: TcpListener) -> Result<Bound, ComponentError> {
    bind_with(ctx, listener, MessageConfig::from_settings(&ctx.settings)).await
}

/// [`bind`] with an explicit configuration (tests shorten the relay's waits).
pub async fn bind_with(
    ctx: &Context,
    listener: TcpListener,
    config: MessageConfig,
) -> Result<Bound, ComponentError> {
    let failed =
        |e: Box<dyn std::error::Error + Send + Sync>| ComponentError::failed(Component::Message, e);
    let pool = ctx.infra.postgres().await?;
    let client = |component| {
        ClientStack::connect(component, &ctx.settings, &ctx.shutdown)
            .map_err(|e| ComponentError::failed(Component::Message, e))
    };
    let users = UserServiceClient::new(client(Component::User)?);
    let presence = PresenceServiceClient::new(client(Component::Presence)?);
    let files = FileServiceClient::new(client(Component::File)?);
    // The bus only publishes here (routing goes through `presence` above, see
    // `upstream` for why); its own presence client is never called.
    let bus = Arc::new(EventBus::new(
        &ctx.settings,
        PresenceServiceClient::new(client(Component::Presence)?),
    ));
    let signal = store::OutboxSignal::default();
    tokio::spawn(
        signal
            .clone()
            .run_notifier(pool.clone(), ctx.shutdown.clone()),
    );
    let store = store::Store::new(pool.clone(), signal.clone());
    // Half the pool for batched sends; the rest serves reads, receipts and the relay.
    let workers = (ctx.settings.database_max_connections as usize / 2).max(1);
    let sender = sender::Sender::start(store.clone(), workers, ctx.shutdown.clone());
    let service = service::MessageService::new(store, sender, users, presence.clone(), files, bus);
    let api = grpc::MessageApi::new(service);

    let relays: Vec<_> = if config.run_relay {
        (0..config.relay_tasks.max(1))
            .map(|_| {
                tokio::spawn(
                    Relay::new(
                        pool.clone(),
                        &ctx.settings,
                        presence.clone(),
                        config.relay.clone(),
                        ctx.shutdown.clone(),
                    )
                    .with_local_signal(&signal)
                    .run(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };

    let addr = listener.local_addr().map_err(|e| failed(e.into()))?;
    let (_reporter, health) = health_service::<MessageServiceServer<grpc::MessageApi>>().await;
    let service = MessageServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let router = server(&ctx.settings)
        .add_service(health)
        .add_service(service);
    let shutdown = ctx.shutdown.clone();
    tracing::info!(%addr, relay = config.run_relay, relay_tasks = config.relay_tasks, "message service listening");
    let serve = Box::pin(async move {
        let served = router
            .serve_with_incoming_shutdown(TcpIncoming::new(listener), shutdown.wait_owned())
            .await;
        // The relays leave on the same shutdown signal; wait so no batch is cut off
        // between publish and delete (that would only cause duplicates).
        for relay in relays {
            let _ = relay.await;
        }
        served.map_err(|e| ComponentError::failed(Component::Message, e))
    });
    Ok(Bound {
        component: Component::Message,
        addr,
        readiness: vec![ReadinessCheck::postgres(pool)],
        serve,
    })
}
