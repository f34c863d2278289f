//! What every request handler and WebSocket task shares.

use std::sync::Arc;

use beehive_common::grpc::{ClientChannel, ClientStack, Retry};
use beehive_common::{Component, ComponentError, Settings, Shutdown};
use beehive_proto::v1::auth_service_client::AuthServiceClient;
use beehive_proto::v1::message_service_client::MessageServiceClient;
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use beehive_proto::v1::social_service_client::SocialServiceClient;
use beehive_proto::v1::user_service_client::UserServiceClient;

use crate::auth::{HasVerifier, TokenVerifier};
use crate::ratelimit::RateLimiter;
use crate::ws;

/// The gateway's shared state; cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub clients: Clients,
    pub verifier: Arc<TokenVerifier>,
    pub hub: Arc<ws::Hub>,
    /// Shared Redis connection (rate limits; anything else that needs a command).
    pub redis: redis::aio::ConnectionManager,
    /// Per-IP limits shared by all replicas.
    pub limiter: Arc<RateLimiter>,
    /// Retry budget shared by the idempotent calls of every handler.
    pub retry: Retry,
}

impl HasVerifier for AppState {
    fn verifier(&self) -> &Arc<TokenVerifier> {
        &self.verifier
    }
}

/// gRPC clients of every service the gateway calls. Each is a balanced, layered
/// channel (deadline, shedding concurrency limit); cloning is cheap and shares it.
#[derive(Clone)]
pub struct Clients {
    pub auth: AuthServiceClient<ClientChannel>,
    pub user: UserServiceClient<ClientChannel>,
    pub social: SocialServiceClient<ClientChannel>,
    pub message: MessageServiceClient<ClientChannel>,
    pub presence: PresenceServiceClient<ClientChannel>,
}

impl Clients {
    /// Connects to every component at its configured address. Nothing is dialled
    /// here: channels connect lazily and re-resolve DNS in the background.
    pub fn connect(settings: &Settings, shutdown: &Shutdown) -> Result<Self, ComponentError> {
        let channel = |component: Component| {
            ClientStack::connect(component, settings, shutdown)
                .map_err(|e| ComponentError::failed(Component::Gateway, e))
        };
        Ok(Self {
            auth: AuthServiceClient::new(channel(Component::Auth)?),
            user: UserServiceClient::new(channel(Component::User)?),
            social: SocialServiceClient::new(channel(Component::Social)?),
            message: MessageServiceClient::new(channel(Component::Message)?),
            presence: PresenceServiceClient::new(channel(Component::Presence)?),
        })
    }
}
