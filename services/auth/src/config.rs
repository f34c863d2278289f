//! The auth service's settings, taken from the process-wide [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use beehive_common::component::ComponentError;
use beehive_common::config::{Component, Settings};

/// What auth reads from the settings.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Lifetime of access tokens (`BEEHIVE_ACCESS_TOKEN_TTL`, 15 min).
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token, renewed on every rotation
    /// (`BEEHIVE_REFRESH_TOKEN_TTL`, 7 days).
    pub refresh_token_ttl: Duration,
    /// PKCS#8 PEM signing key; `None`: a key generated into PostgreSQL.
    pub jwt_secret_file: Option<PathBuf>,
    /// How long ended sessions are kept before deletion.
    pub keep_ended_sessions: Duration,
    /// How often ended sessions are purged.
    pub purge_interval: Duration,
}

impl AuthConfig {
    /// Reads the settings, refusing lifetimes that make no sense.
    pub fn from_settings(settings: &Settings) -> Result<Self, ComponentError> {
        let invalid = |message: &str| ComponentError::Config {
            component: Component::Auth,
            message: message.to_owned(),
        };
        if settings.access_token_ttl < Duration::from_secs(1) {
            return Err(invalid("BEEHIVE_ACCESS_TOKEN_TTL must be at least 1s"));
        }
        if settings.access_token_ttl.as_secs() > u64::from(u32::MAX) {
            return Err(invalid("BEEHIVE_ACCESS_TOKEN_TTL is too long"));
        }
        if settings.refresh_token_ttl < settings.access_token_ttl {
            return Err(invalid(
                "BEEHIVE_REFRESH_TOKEN_TTL must not be shorter than BEEHIVE_ACCESS_TOKEN_TTL",
            ));
        }
        Ok(Self {
            access_token_ttl: settings.access_token_ttl,
            refresh_token_ttl: settings.refresh_token_ttl,
            jwt_secret_file: settings.jwt_secret_file.clone(),
            keep_ended_sessions: Duration::from_secs(86_400).max(settings.access_token_ttl * 2),
            purge_interval: Duration::from_secs(600),
        })
    }
}
