//! The gateway: Beehive's public edge.
//!
//! It serves the REST API and WebSocket connections on the public HTTP port
//! (`Settings.http_addr`), authenticates every request locally (see [`auth`]), and
//! turns requests into gRPC calls to the services. It holds no data of its own.

pub mod auth;
pub mod http;
pub mod push;
pub mod ratelimit;
pub mod rest;
mod rpc;
pub mod state;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use beehive_common::admin::{Readiness, ReadinessCheck};
use beehive_common::{Bound, Component, ComponentError, Context};

use crate::auth::TokenVerifier;
use crate::ratelimit::RateLimiter;
use crate::state::{AppState, Clients};

/// Binds the gateway on `listener` (the public HTTP port): builds the state, starts
/// the verifier and the WebSocket hub, and returns the serving future, which stops
/// accepting on shutdown and lets in-flight requests finish.
pub async fn bind(
    ctx: &Context,
    listener: tokio::net::TcpListener,
) -> Result<Bound, ComponentError> {
    let failed = |e: std::io::Error| ComponentError::failed(Component::Gateway, e);
    let addr = listener.local_addr().map_err(failed)?;
    let settings = Arc::new(ctx.settings.clone());
    let clients = Clients::connect(&settings, &ctx.shutdown)?;
    let redis = ctx.infra.redis().await?;
    let verifier = TokenVerifier::start(&settings, clients.auth.clone(), &ctx.shutdown)
        .map_err(|e| ComponentError::failed(Component::Gateway, e))?;
    let hub = ws::Hub::start(ctx, &clients, verifier.clone()).await?;
    let drain = hub.clone();
    let limiter = Arc::new(RateLimiter::new(
        redis.clone(),
        &settings.installation,
        settings.rate_limits,
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
        settings: settings.clone(),
        clients,
        verifier,
        hub,
        redis,
        limiter,
        retry: beehive_common::grpc::Retry::default(),
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
    let cors = rest::cors_layer(&state.settings.cors_origins);
    rest::router()
        .merge(ws::routes())
        .merge(beehive_common::admin::health_routes(ready))
        .fallback(http::not_found)
        // Must come after every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(DefaultBodyLimit::max(http::MAX_BODY_BYTES))
        .layer(tower::util::option_layer(cors))
        .layer(axum::middleware::from_fn(http::request_context))
        .with_state(state)
}
