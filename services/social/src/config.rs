//! The social service's settings. Nothing here has its own `BEEHIVE_*` variable yet:
//! the defaults suit every deployment so far; tests may build their own.

use std::time::Duration;

use beehive_common::Settings;

/// How the social service runs.
#[derive(Clone, Debug)]
pub struct SocialConfig {
    /// How long an RPC waits for its notification to be confirmed by the broker. The
    /// notification is a convenience (clients also list requests), so a slow broker
    /// must not hold the caller for the whole gRPC deadline.
    pub notify_timeout: Duration,
    /// How often pending requests past their lifetime are marked expired.
    pub expiry_sweep_interval: Duration,
    /// Rows marked per statement, so one sweep never holds many row locks at once.
    pub expiry_sweep_batch: u32,
}

impl SocialConfig {
    /// The configuration for `settings`.
    pub fn from_settings(_settings: &Settings) -> Self {
        Self::default()
    }
}

impl Default for SocialConfig {
    fn default() -> Self {
        Self {
            notify_timeout: Duration::from_secs(3),
            expiry_sweep_interval: Duration::from_secs(3600),
            expiry_sweep_batch: 1000,
        }
    }
}
