//! Beehive's auth service (`beehive.v1.AuthService`): sessions, EdDSA access tokens,
//! rotating refresh tokens, signing keys and revocation, in PostgreSQL schema `auth`.
//!
//! A session is one login: its refresh-token family and every access token minted from
//! it (JWT `sid`). Gateways verify access tokens locally with ListSigningKeys and learn
//! revocations from the Redis channel `<installation>:auth:revocations` (see
//! [`revocation`]) plus ListRevokedSessions. Accounts and passwords belong to the user
//! service, which auth calls over gRPC.

#![warn(missing_docs)]

pub mod config;
pub mod grpc;
pub mod keys;
pub mod revocation;
pub mod service;
pub mod session;
pub mod store;
pub mod token;
pub mod user_client;

use beehive_common::admin::ReadinessCheck;
use beehive_common::component::{Bound, ComponentError, Context};
use beehive_common::config::Component;
use beehive_common::grpc::{health_service, server, tokio_stream_shim::TcpIncoming};
use beehive_proto::v1::auth_service_server::AuthServiceServer;
use sqlx::migrate::Migrator;

use crate::config::AuthConfig;
use crate::grpc::{AuthGrpc, MAX_REQUEST_BYTES};
use crate::revocation::Publisher;
use crate::service::AuthService;
use crate::store::Store;
use crate::token::Tokens;

/// The auth service's migrations (versions 1000001+, schema `auth`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Builds the auth service on `listener`: loads (or generates) the signing key,
/// connects PostgreSQL, Redis and the user service, and returns the future that serves
/// until shutdown.
pub async fn bind(
    ctx: &Context,
    listener: tokio::net::TcpListener,
) -> Result<Bound, ComponentError> {
    let addr = listener
        .local_addr()
        .map_err(|e| ComponentError::failed(Component::Auth, e))?;
    let config = AuthConfig::from_settings(&ctx.settings)?;
    let pool = ctx.infra.postgres().await?;
    let redis = ctx.infra.redis().await?;
    let store = Store::new(pool.clone());
    let ring = keys::load(&store, config.jwt_secret_file.as_deref())
        .await
        .map_err(|e| ComponentError::failed(Component::Auth, e))?;
    let users = user_client::connect(&ctx.settings, &ctx.shutdown)
        .map_err(|e| ComponentError::failed(Component::Auth, e))?;
    let tokens = Tokens::new(ring, config.access_token_ttl);
    let publisher = Publisher::new(redis.clone(), &ctx.settings);
    let auth = AuthService::new(store, tokens, publisher, users, config);

    let janitor = auth.clone();
    let janitor_shutdown = ctx.shutdown.clone();
    tokio::spawn(async move { janitor.purge_until(janitor_shutdown).await });

    let (health_reporter, health) = health_service::<AuthServiceServer<AuthGrpc>>().await;
    let service =
        AuthServiceServer::new(AuthGrpc::new(auth)).max_decoding_message_size(MAX_REQUEST_BYTES);
    let settings = ctx.settings.clone();
    let shutdown = ctx.shutdown.clone();
    let serve = Box::pin(async move {
        tracing::info!(%addr, "auth service listening");
        let result = server(&settings)
            .add_service(health)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::new(listener), shutdown.wait_owned())
            .await;
        drop(health_reporter);
        result.map_err(|e| ComponentError::failed(Component::Auth, e))
    });
    Ok(Bound {
        component: Component::Auth,
        addr,
        readiness: vec![ReadinessCheck::postgres(pool), ReadinessCheck::redis(redis)],
        serve,
    })
}
