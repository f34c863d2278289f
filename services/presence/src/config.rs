//! The presence service's settings.

use std::time::Duration;

use beehive_common::Settings;

/// How presence behaves. Derived from [`Settings`]; tests shorten the TTL to watch
/// registrations expire within seconds.
#[derive(Clone, Debug)]
pub struct PresenceConfig {
    /// How long a connection counts as online after its last registration or
    /// heartbeat. A gateway that dies stops counting its users online this long after
    /// its last heartbeat. Gateways heartbeat well within it (a third is a good
    /// cadence; HeartbeatResponse tells them the TTL).
    pub ttl: Duration,
    /// How often expired connections are swept (their users announced offline and
    /// their last-seen time recorded).
    pub sweep_interval: Duration,
    /// How many presence transitions may wait for announcement before new ones are
    /// dropped (announcements are best effort; the state in Redis is exact).
    pub event_queue: usize,
}

impl PresenceConfig {
    /// Default TTL of a registration.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

    /// The configuration for `settings` (`BEEHIVE_PRESENCE_TTL`, default
    /// [`Self::DEFAULT_TTL`]).
    pub fn from_settings(settings: &Settings) -> Self {
        Self::with_ttl(settings.presence_ttl)
    }

    /// A configuration with registration TTL `ttl` and a sweep cadence that keeps the
    /// announcement of an expired connection within a fraction of it.
    pub fn with_ttl(ttl: Duration) -> Self {
        let ttl = ttl.max(Duration::from_millis(200));
        Self {
            ttl,
            sweep_interval: (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)),
            event_queue: 100_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_comes_from_the_settings() {
        let defaults = PresenceConfig::from_settings(&Settings::local_defaults());
        assert_eq!(defaults.ttl, PresenceConfig::DEFAULT_TTL);
        let map = [("BEEHIVE_PRESENCE_TTL".to_owned(), "5s".to_owned())].into();
        let (settings, _) = Settings::from_map(&map).expect("valid settings");
        assert_eq!(
            PresenceConfig::from_settings(&settings).ttl,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn sweeps_are_frequent_relative_to_the_ttl() {
        let config = PresenceConfig::with_ttl(Duration::from_secs(30));
        assert_eq!(config.sweep_interval, Duration::from_secs(1));
        let short = PresenceConfig::with_ttl(Duration::from_secs(1));
        assert_eq!(short.sweep_interval, Duration::from_millis(250));
        let silly = PresenceConfig::with_ttl(Duration::ZERO);
        assert_eq!(silly.ttl, Duration::from_millis(200));
    }
}
