//! The gateway: Beehive's public edge.
//!
//! It serves the REST API and WebSocket connections on the public HTTP port
//! (`Settings.http_addr`), authenticates every request locally (see [`auth`]), and
//! turns requests into gRPC calls to the services. It holds no data of its own.
//!
//! The modules, from the core outwards (DESIGN.md, "The gateway"):
//! - [`app`]: the transport-independent core, one function per use case; every rule
//!   (limits, friendship, visibility) lives there once;
//! - [`clients`]: the typed gRPC methods the core and the hub call;
//! - [`wire`]: frames and JSON views, what travels to and from clients;
//! - [`hub`]: live sockets, their outboxes and registration; an event sink;
//! - [`push`]: the event consumer, RabbitMQ into any event sink;
//! - [`rest`] and [`ws`]: the two transports, thin adapters over [`app`];
//! - [`auth`], [`http`], [`ratelimit`], [`state`], [`config`]: the HTTP plumbing.
//!
//! Only this root wires the hub to the consumer: neither knows the other.

pub mod app;
pub mod auth;
pub mod clients;
pub mod config;
pub mod http;
pub mod hub;
pub mod push;
pub mod ratelimit;
pub mod rest;
pub mod state;
pub mod wire;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use beehive_common::admin::{Readiness, ReadinessCheck};
use beehive_common::{Bound, Component, ComponentError, Context};

use crate::auth::TokenVerifier;
use crate::clients::Clients;
use crate::config::GatewayConfig;
use crate::hub::Hub;
use crate::push::Consumer;
use crate::ratelimit::RateLimiter;
use crate::state::AppState;

/// Binds the gateway on `listener` (the public HTTP port): builds the state, starts
/// the verifier, declares this instance's event queue (so nothing routed here after a
/// socket registers can be lost for want of a queue; fails when RabbitMQ cannot be
/// reached), starts the hub and the consumer feeding it, and returns the serving
/// future, which stops accepting on shutdown and lets in-flight requests finish.
pub async fn bind(
    ctx: &Context,
    listener: tokio::net::TcpListener,
) -> Result<Bound, ComponentError> {
    let failed = |e: std::io::Error| ComponentError::failed(Component::Gateway, e);
    let addr = listener.local_addr().map_err(failed)?;
    let settings = &ctx.settings;
    let config = Arc::new(GatewayConfig::from_settings(settings));
    let clients = Clients::connect(settings, &ctx.shutdown)?;
    let redis = ctx.infra.redis().await?;
    let verifier = TokenVerifier::start(settings, clients.auth_for_verifier(), &ctx.shutdown)
        .map_err(|e| ComponentError::failed(Component::Gateway, e))?;
    let consumer = Consumer::connect(settings)
        .await
        .map_err(|e| ComponentError::failed(Component::Gateway, e))?;
    let hub = Hub::start(
        config.instance_id.clone(),
        &clients,
        verifier.clone(),
        config.ws.clone(),
        &ctx.shutdown,
    );
    tokio::spawn(consumer.run(hub.clone(), ctx.shutdown.clone()));
    let drain = hub.clone();
    let limiter = Arc::new(RateLimiter::new(
        redis.clone(),
        &config.installation,
        config.rate_limits,
    ));

    let verifier_ready = verifier.clone();
    let readiness = vec![
        ReadinessCheck::redis(redis.clone()),
        ReadinessCheck::new("auth-keys", move || {
            let ready = verifier_ready.is_ready();
            async move {
                if ready {
                    Ok(())
                } else {
                    Err("signing keys or revoked sessions not loaded yet".to_owned())
                }
            }
        }),
    ];

    let state = AppState {
        config,
        clients,
        verifier,
        hub,
        redis,
        limiter,
    };
    let app = app(state, readiness.clone());

    let shutdown = ctx.shutdown.clone();
    let serve = Box::pin(async move {
        tracing::info!(%addr, "gateway listening");
        // Frames are small and latency-bound: without TCP_NODELAY a push written while
        // the previous one is unacknowledged waits for the client's delayed ACK (up
        // to 40 ms on Linux).
        let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set");
            }
        });
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.wait_owned())
        .await
        .map_err(|e| ComponentError::failed(Component::Gateway, e));
        // Upgraded sockets outlive axum's graceful shutdown: wait until the hub closed
        // them and unregistered them from presence (bounded by its drain timeout).
        drain.drained().await;
        served
    });
    Ok(Bound {
        component: Component::Gateway,
        addr,
        readiness,
        serve,
    })
}

/// The whole HTTP application: REST, WebSocket, health, with the cross-cutting
/// layers (request ids and logging, CORS, body limit) and API.md's 404/405 bodies.
pub fn app(state: AppState, readiness: Vec<ReadinessCheck>) -> Router {
    let mut ready = Readiness::new();
    ready.extend(readiness);
    let cors = rest::cors_layer(&state.config.cors_origins);
    rest::router()
        .merge(ws::routes())
        .merge(beehive_common::admin::health_routes(ready))
        .fallback(http::not_found)
        // Must come after every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(app::limits::MAX_BODY_BYTES))
        .layer(tower::util::option_layer(cors))
        .layer(axum::middleware::from_fn(http::request_context))
        .with_state(state)
}
