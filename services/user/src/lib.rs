//! Beehive's user service (`beehive.v1.UserService`): accounts, email verification
//! codes, profiles and argon2id password hashes, in PostgreSQL schema `users`.
//!
//! Only auth calls Register, VerifyCredentials and ChangePassword; the gateway reads and
//! updates profiles; message asks UsersExist. Sessions and tokens are auth's business.

#![warn(missing_docs)]

pub mod account;
pub mod config;
pub mod grpc;
pub mod password;
pub mod service;
pub mod store;
pub mod verification;

use std::time::Duration;

use beehive_common::admin::ReadinessCheck;
use beehive_common::component::{Bound, ComponentError, Context};
use beehive_common::config::Component;
use beehive_common::grpc::{health_service, server, tokio_stream_shim::TcpIncoming};
use beehive_proto::v1::user_service_server::UserServiceServer;
use sqlx::migrate::Migrator;

use crate::config::UserConfig;
use crate::grpc::{MAX_REQUEST_BYTES, UserGrpc};
use crate::password::Passwords;
use crate::service::UserService;
use crate::store::Store;

/// The user service's migrations (versions 2000001+, schema `users`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// How often long-expired verification codes are deleted.
const CODE_PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// Builds the user service on `listener`: connects PostgreSQL, prepares the password
/// hasher and the mailer, and returns the future that serves until shutdown.
pub async fn bind(
    ctx: &Context,
    listener: tokio::net::TcpListener,
) -> Result<Bound, ComponentError> {
    let failed =
        |e: Box<dyn std::error::Error + Send + Sync>| ComponentError::failed(Component::User, e);
    let addr = listener.local_addr().map_err(|e| failed(e.into()))?;
    let config = UserConfig::from_settings(&ctx.settings)?;
    let pool = ctx.infra.postgres().await?;
    // The dummy hash takes one argon2 run: keep it off the runtime's workers.
    let passwords = tokio::task::spawn_blocking(Passwords::owasp)
        .await
        .map_err(|e| failed(e.into()))?
        .map_err(|e| failed(e.into()))?;
    let users = UserService::new(Store::new(pool.clone()), passwords, config);

    let janitor = users.clone();
    let janitor_shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        janitor
            .purge_codes_until(CODE_PURGE_INTERVAL, janitor_shutdown)
            .await;
    });

    let (health_reporter, health) = health_service::<UserServiceServer<UserGrpc>>().await;
    let service =
        UserServiceServer::new(UserGrpc::new(users)).max_decoding_message_size(MAX_REQUEST_BYTES);
    let settings = ctx.settings.clone();
    let shutdown = ctx.shutdown.clone();
    let serve = Box::pin(async move {
        tracing::info!(%addr, "user service listening");
        let result = server(&settings)
            .add_service(health)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::new(listener), shutdown.wait_owned())
            .await;
        drop(health_reporter);
        result.map_err(|e| ComponentError::failed(Component::User, e))
    });
    Ok(Bound {
        component: Component::User,
        addr,
        readiness: vec![ReadinessCheck::postgres(pool)],
        serve,
    })
}
