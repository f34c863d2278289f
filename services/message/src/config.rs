//! The message service's settings. Nothing here has its own `BEEHIVE_*` variable yet:
//! the defaults suit every deployment so far, and tests shorten the relay's waits.

use beehive_common::Settings;

use crate::relay::RelayConfig;

/// How the message service runs.
#[derive(Clone, Debug)]
pub struct MessageConfig {
    /// The outbox relay's tuning.
    pub relay: RelayConfig,
    /// Whether this process runs an outbox relay. Every replica normally does (they
    /// share the partitions); tests turn it off to drive relays themselves.
    pub run_relay: bool,
    /// Relay tasks in this process. They share the outbox partitions like relays of
    /// different replicas do, so one task's confirm wait overlaps another's queries.
    pub relay_tasks: usize,
}

impl MessageConfig {
    /// The configuration for `settings`.
    pub fn from_settings(_settings: &Settings) -> Self {
        Self {
            relay: RelayConfig::default(),
            run_relay: true,
            relay_tasks: 2,
        }
    }
}
