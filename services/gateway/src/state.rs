//! What every request handler shares.

use std::sync::Arc;

use crate::auth::{HasVerifier, TokenVerifier};
use crate::clients::Clients;
use crate::config::GatewayConfig;
use crate::hub::Hub;
use crate::ratelimit::RateLimiter;

/// The gateway's shared state; cheap to clone (everything inside is shared).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<GatewayConfig>,
    pub clients: Clients,
    pub verifier: Arc<TokenVerifier>,
    pub hub: Arc<Hub>,
    /// Shared Redis connection (rate limits; anything else that needs a command).
    pub redis: redis::aio::ConnectionManager,
    /// Per-IP limits shared by all replicas.
    pub limiter: Arc<RateLimiter>,
}

impl HasVerifier for AppState {
    fn verifier(&self) -> &Arc<TokenVerifier> {
        &self.verifier
    }
}
