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
//! - [`auth`], [`http`], [`ratelimit`], [`state`], [`config`]: the HTTP plumbing;
//! - [`console`]: the built web console at `/`.
//!
//! Only this root wires the hub to the consumer: neither knows the other.

pub mod app;
pub mod auth;
pub mod clients;
pub mod config;
pub mod console;
pub mod http;
pub mod hub;
pub mod push;
pub mod ratelimit;
pub mod rest;
pub mod sends;
pub mod state;
pub mod wire;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use beehive_common::admin::{Readiness, ReadinessCheck};
use beehive_common::{Bound, Component, ComponentError, Context, Shutdown};

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
/// future.
///
/// On shutdown the gateway drains instead of dropping everything at once: `/readyz`
/// answers 503 at once (the Service stops routing here; the Kubernetes probe is on
/// this port, so it keeps answering) and upgrades are refused with 503, while the
/// hub tells every socket to `reconnect` and closes the sockets in waves over the
/// drain window; the consumer keeps delivering to the sockets not closed yet. Once
/// the hub has drained, the listener stops accepting, in-flight requests get the
/// drain grace to finish, and the future completes.
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
    // The consumer outlives the shutdown signal: it feeds the sockets still open during
    // the drain, and stops once the hub has drained.
    let consumer_stop = Shutdown::new();
    tokio::spawn(consumer.run(hub.clone(), consumer_stop.clone()));
    {
        let hub = hub.clone();
        tokio::spawn(async move {
            hub.drained().await;
            consumer_stop.trigger();
        });
    }
    let drain = hub.clone();
    let drain_grace = config.ws.drain_grace;
    let limiter = Arc::new(RateLimiter::new(
        redis.clone(),
        &config.installation,
        config.rate_limits,
    ));

    let verifier_ready = verifier.clone();
    let hub_draining = hub.clone();
    let readiness = vec![
        // First to fail on shutdown, so traffic moves away while the sockets drain.
        ReadinessCheck::new("draining", move || {
            let draining = hub_draining.is_draining();
            async move {
                if draining {
                    Err("the gateway is shutting down".to_owned())
                } else {
                    Ok(())
                }
            }
        }),
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
        // Upgraded sockets are invisible to axum's graceful shutdown: keep accepting
        // (for the failing /readyz and the refused upgrades) until the hub closed them
        // and unregistered them from presence.
        let hub = drain.clone();
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { hub.drained().await });
        let after_drain = async {
            drain.drained().await;
            tokio::time::sleep(drain_grace).await;
        };
        tokio::select! {
            served = served => served.map_err(|e| ComponentError::failed(Component::Gateway, e)),
            () = after_drain => {
                // A request that outlives the grace must not hold the process past the
                // termination grace period.
                tracing::warn!(grace_ms = drain_grace.as_millis() as u64, "HTTP requests still in flight after the drain; stopping anyway");
                Ok(())
            }
        }
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
    let console = console::routes(console::ConsoleDir::new(state.config.console_dir.clone()));
    rest::router()
        .merge(ws::routes())
        .merge(console)
        .merge(beehive_common::admin::health_routes(ready))
        .fallback(http::not_found)
        // Must come after every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(app::limits::MAX_BODY_BYTES))
        .layer(tower::util::option_layer(cors))
        .layer(axum::middleware::from_fn(http::request_context))
        .with_state(state)
}
