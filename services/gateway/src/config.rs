//! The gateway's settings, taken from the process-wide [`Settings`] (DESIGN.md: every
//! component has its typed settings in `config.rs`).

use std::time::Duration;

use beehive_common::Settings;
use beehive_common::config::IpNet;

use crate::app::limits::MAX_WS_MESSAGE_BYTES;

/// What the gateway reads from the settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// This instance's id (`BEEHIVE_INSTANCE_ID`): its presence routing key and the
    /// name of its event queue.
    pub instance_id: String,
    /// Prefix of every Redis key and RabbitMQ name (`BEEHIVE_INSTALLATION`).
    pub installation: String,
    /// Whether the per-IP rate limits apply (`BEEHIVE_RATE_LIMITS`; off for load tests).
    pub rate_limits: bool,
    /// Peers whose `X-Forwarded-For` is believed (`BEEHIVE_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<IpNet>,
    /// Origins allowed cross-origin access (`BEEHIVE_CORS_ORIGINS`; `*` for any).
    pub cors_origins: Vec<String>,
    /// The built web console's directory (`BEEHIVE_CONSOLE_DIR`); `None` looks in
    /// the default places (see [`crate::console::ConsoleDir`]).
    pub console_dir: Option<std::path::PathBuf>,
    /// Largest file accepted (`BEEHIVE_FILE_MAX_SIZE`): a tus creation over it is 413
    /// before anything else.
    pub file_max_size: u64,
    /// A PATCH body silent this long ends the PATCH with what arrived.
    pub upload_idle_timeout: Duration,
    /// The WebSocket side's tunables.
    pub ws: WsConfig,
}

impl GatewayConfig {
    /// The configuration for `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            instance_id: settings.instance_id.clone(),
            installation: settings.installation.clone(),
            rate_limits: settings.rate_limits,
            trusted_proxies: settings.trusted_proxies.clone(),
            cors_origins: settings.cors_origins.clone(),
            console_dir: settings.console_dir.clone(),
            file_max_size: settings.file_max_size,
            upload_idle_timeout: Duration::from_secs(60),
            ws: WsConfig::from_settings(settings),
        }
    }
}

/// Tunables of the WebSocket side. Derived from [`Settings`]; tests may adjust them.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// A socket silent for longer is closed (`BEEHIVE_WS_IDLE_TIMEOUT`; API.md: 60 s
    /// by default).
    pub idle_timeout: Duration,
    /// How often the server pings a socket; well below the idle timeout so a live
    /// client's pong always arrives in time.
    pub ping_interval: Duration,
    /// Live frames one socket may have queued before it counts as too slow and is
    /// disconnected.
    pub queue_capacity: usize,
    /// How long a write may make no progress before the socket counts as dead (sync
    /// output waits this long for a slow reader instead of dropping it at once).
    pub write_stall_timeout: Duration,
    /// Period of the batched presence heartbeat; shortened automatically when the
    /// presence TTL it reports is shorter than three periods.
    pub heartbeat_interval: Duration,
    /// Connections per heartbeat call.
    pub heartbeat_batch: usize,
    /// Concurrent UnregisterConnection calls (disconnect storms must not trip the
    /// client's load shedding).
    pub unregister_concurrency: usize,
    /// Concurrent RegisterConnection calls of upgrading sockets. A connect storm (a
    /// gateway restart moving thousands of clients) then queues here, in the
    /// handshakes, instead of tripping the presence service's load shedding, which
    /// would fail the handshakes with 503.
    pub register_concurrency: usize,
    /// tungstenite read buffer: small, because it is allocated per idle socket.
    pub read_buffer_size: usize,
    /// tungstenite write buffer target before it writes to the socket.
    pub write_buffer_size: usize,
    /// API.md: WebSocket messages up to 1 MiB.
    pub max_message_size: usize,
    /// Unparseable frames tolerated per window before closing with 1008 (API.md:
    /// more than 10 in 10 s).
    pub max_unparseable: usize,
    /// The window of `max_unparseable`.
    pub unparseable_window: Duration,
    /// On shutdown, the window over which the sockets are closed in waves
    /// (`BEEHIVE_GATEWAY_DRAIN_WINDOW`, 30 s by default; zero closes them at once).
    pub drain_window: Duration,
    /// How long shutdown still waits after the window for the last sockets to flush
    /// their queues, close and unregister before the gateway stops regardless.
    pub drain_grace: Duration,
}

impl WsConfig {
    /// The configuration for `settings`.
    pub fn from_settings(settings: &Settings) -> Self {
        let idle_timeout = settings.ws_idle_timeout.max(Duration::from_secs(1));
        Self {
            idle_timeout,
            ping_interval: (idle_timeout / 3)
                .clamp(Duration::from_millis(300), Duration::from_secs(25)),
            queue_capacity: 1024,
            write_stall_timeout: idle_timeout,
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_batch: 1000,
            unregister_concurrency: 16,
            register_concurrency: 64,
            read_buffer_size: 256,
            write_buffer_size: 8 * 1024,
            max_message_size: MAX_WS_MESSAGE_BYTES,
            max_unparseable: 10,
            unparseable_window: Duration::from_secs(10),
            drain_window: settings.gateway_drain_window,
            drain_grace: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_map(&map).expect("valid settings").0
    }

    #[test]
    fn ws_timings_follow_the_idle_timeout() {
        let config = GatewayConfig::from_settings(&settings(&[("BEEHIVE_WS_IDLE_TIMEOUT", "9s")]));
        assert_eq!(config.ws.idle_timeout, Duration::from_secs(9));
        assert_eq!(config.ws.ping_interval, Duration::from_secs(3));
        assert_eq!(config.ws.max_message_size, 1 << 20);
        let defaults = GatewayConfig::from_settings(&settings(&[]));
        assert_eq!(defaults.ws.idle_timeout, Duration::from_secs(60));
        assert_eq!(defaults.ws.ping_interval, Duration::from_secs(20));
        assert!(defaults.rate_limits);
        assert_eq!(defaults.ws.drain_window, Duration::from_secs(30));
        let at_once =
            GatewayConfig::from_settings(&settings(&[("BEEHIVE_GATEWAY_DRAIN_WINDOW", "0s")]));
        assert_eq!(at_once.ws.drain_window, Duration::ZERO);
    }

    #[test]
    fn console_dir_comes_from_the_setting() {
        assert_eq!(
            GatewayConfig::from_settings(&settings(&[])).console_dir,
            None
        );
        let set =
            GatewayConfig::from_settings(&settings(&[("BEEHIVE_CONSOLE_DIR", "/srv/console")]));
        assert_eq!(
            set.console_dir,
            Some(std::path::PathBuf::from("/srv/console"))
        );
    }
}
