//! WebSocket connections: `GET /ws` of API.md.
//!
//! The [`Hub`] owns this instance's sockets. A socket is registered (locally and with
//! the presence service) before the 101 response, so every event committed after the
//! client saw the 101 is routed here and finds the socket. Each socket is one task
//! that reads client frames, answers them through the services, and writes the live
//! frames the push consumer ([`crate::push`]) queues in its bounded outbox. Around
//! the sockets the hub runs: the push consumer, a batched presence heartbeat, a
//! batched unregister worker, the revocation listener that kicks revoked sessions,
//! and the shutdown sequence that closes every socket and unregisters it.

mod dispatch;
/// The client frame decoder and server frame encoders: public so the fuzz targets
/// (fuzz/) can drive the decoder directly.
pub mod frame;
pub(crate) mod registry;
mod socket;
mod upgrade;
pub(crate) mod views;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use beehive_common::grpc::Retry;
use beehive_common::{Component, ComponentError, Context, Settings, Shutdown};
use beehive_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{Revocation, TokenVerifier};
use crate::state::{AppState, Clients};
use registry::{CloseReason, Conn, Registry};

/// Tunables of the WebSocket side. Derived from [`Settings`]; tests may adjust them.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// A socket silent for longer is closed (API.md: 60 s by default).
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
    /// How long shutdown waits for sockets to close and unregister.
    pub drain_timeout: Duration,
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
            max_message_size: 1024 * 1024,
            max_unparseable: 10,
            unparseable_window: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// This instance's sockets and the background work that serves them.
pub struct Hub {
    pub(crate) registry: Registry,
    pub(crate) config: WsConfig,
    pub(crate) instance_id: String,
    pub(crate) clients: Clients,
    pub(crate) verifier: Arc<TokenVerifier>,
    pub(crate) retry: Retry,
    /// Bounds concurrent registrations (see [`WsConfig::register_concurrency`]).
    pub(crate) register_permits: tokio::sync::Semaphore,
    pub(crate) shutdown: Shutdown,
    unregister_tx: mpsc::UnboundedSender<pb::Connection>,
    /// Unregistrations queued or in flight (shutdown waits for zero).
    unregister_pending: AtomicUsize,
    /// Fired once shutdown has closed and unregistered every socket.
    drained: CancellationToken,
    consumer: Arc<crate::push::ConsumerState>,
}

impl Hub {
    /// Starts the hub: declares this instance's event queue (so nothing routed here
    /// after a socket registers can be lost for want of a queue), then starts the
    /// push consumer, heartbeat, unregister worker, revocation listener and shutdown
    /// sequence. Fails when RabbitMQ cannot be reached at start-up.
    pub async fn start(
        ctx: &Context,
        clients: &Clients,
        verifier: Arc<TokenVerifier>,
    ) -> Result<Arc<Hub>, ComponentError> {
        Self::start_with(
            ctx,
            clients,
            verifier,
            WsConfig::from_settings(&ctx.settings),
        )
        .await
    }

    /// [`Hub::start`] with explicit tunables.
    pub async fn start_with(
        ctx: &Context,
        clients: &Clients,
        verifier: Arc<TokenVerifier>,
        config: WsConfig,
    ) -> Result<Arc<Hub>, ComponentError> {
        let consumer = crate::push::Consumer::connect(&ctx.settings)
            .await
            .map_err(|e| ComponentError::failed(Component::Gateway, e))?;
        let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
        let revocations = verifier.subscribe();
        let register_permits = tokio::sync::Semaphore::new(config.register_concurrency.max(1));
        let hub = Arc::new(Hub {
            registry: Registry::new(64),
            config,
            instance_id: ctx.settings.instance_id.clone(),
            clients: clients.clone(),
            verifier,
            retry: Retry::default(),
            shutdown: ctx.shutdown.clone(),
            unregister_tx,
            unregister_pending: AtomicUsize::new(0),
            register_permits,
            drained: CancellationToken::new(),
            consumer: consumer.state(),
        });
        tokio::spawn(consumer.run(hub.clone(), ctx.shutdown.clone()));
        tokio::spawn(heartbeat(hub.clone()));
        tokio::spawn(unregister_worker(hub.clone(), unregister_rx));
        tokio::spawn(follow_revocations(hub.clone(), revocations));
        tokio::spawn(drain_on_shutdown(hub.clone()));
        tracing::info!(instance_id = %hub.instance_id, "websocket hub started");
        Ok(hub)
    }

    /// Open sockets on this instance.
    pub fn connections(&self) -> usize {
        self.registry.connections()
    }

    /// Users with at least one open socket on this instance.
    pub fn users(&self) -> usize {
        self.registry.users()
    }

    /// This instance's `GetGatewayStats` answer.
    pub fn stats(&self) -> pb::GetGatewayStatsResponse {
        pb::GetGatewayStatsResponse {
            instance_id: self.instance_id.clone(),
            connections: self.connections() as u64,
            users: self.users() as u64,
        }
    }

    /// Whether the push consumer currently consumes this instance's queue (for
    /// `/readyz`: while it does not, live frames wait in the queue).
    pub fn is_consuming(&self) -> bool {
        self.consumer.is_consuming()
    }

    /// Completes once shutdown has closed every socket and unregistered it from
    /// presence (or the drain timeout passed). Await it before the process exits.
    pub async fn drained(&self) {
        self.drained.cancelled().await;
    }

    /// Kicks the sockets of `user` (of one session, or all) with `reason`.
    pub(crate) fn kick(
        &self,
        user: &Uuid,
        session: Option<&str>,
        reason: pb::RevocationReason,
    ) -> usize {
        let sockets = self.registry.sockets_of(user, session);
        for conn in &sockets {
            conn.outbox.close(CloseReason::Kicked(reason));
        }
        sockets.len()
    }

    /// Queues the presence unregistration of a socket that is gone.
    pub(crate) fn unregister(&self, conn: &Conn) {
        self.unregister_pending.fetch_add(1, Ordering::AcqRel);
        if self.unregister_tx.send(conn.to_proto()).is_err() {
            self.unregister_pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The WebSocket routes (`GET /ws`).
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/ws", axum::routing::get(upgrade::upgrade))
}

/// Refreshes every local socket's presence registration, in batches, so that the
/// registrations of a gateway that dies expire after the presence TTL while live ones
/// never do.
async fn heartbeat(hub: Arc<Hub>) {
    let mut period = hub.config.heartbeat_interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = hub.shutdown.wait() => return,
        }
        let sockets = hub.registry.snapshot();
        for batch in sockets.chunks(hub.config.heartbeat_batch.max(1)) {
            let request = pb::HeartbeatRequest {
                instance_id: hub.instance_id.clone(),
                connections: batch.iter().map(|c| c.to_proto()).collect(),
            };
            match crate::rpc::rpc!(hub.clients.presence, heartbeat, request).await {
                Ok(response) => {
                    let ttl = Duration::from_secs(u64::from(response.ttl_seconds));
                    if !ttl.is_zero() {
                        period = hub
                            .config
                            .heartbeat_interval
                            .min(ttl / 3)
                            .max(Duration::from_millis(200));
                    }
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), sockets = batch.len(), "presence heartbeat failed");
                }
            }
        }
    }
}

/// Unregisters closed sockets from presence with bounded concurrency.
async fn unregister_worker(hub: Arc<Hub>, mut rx: mpsc::UnboundedReceiver<pb::Connection>) {
    let concurrency = hub.config.unregister_concurrency.max(1);
    let drained = hub.drained.clone();
    let queue = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let work = queue.for_each_concurrent(concurrency, |connection| {
        let hub = hub.clone();
        async move {
            let request = pb::UnregisterConnectionRequest {
                instance_id: hub.instance_id.clone(),
                connection: Some(connection),
            };
            let result = hub
                .retry
                .idempotent(|| crate::rpc::rpc!(hub.clients.presence, unregister_connection, request.clone()))
                .await;
            if let Err(status) = result {
                // The registration expires with the presence TTL once heartbeats stop
                // naming it, so this is a delay, not a leak.
                tracing::warn!(code = ?status.code(), message = status.message(), "unregistering a socket failed");
            }
            hub.unregister_pending.fetch_sub(1, Ordering::AcqRel);
        }
    });
    // Runs until shutdown finished draining; queued work is done by then.
    tokio::select! {
        () = work => {}
        () = drained.cancelled() => {}
    }
}

/// Kicks sockets of sessions the verifier learns are revoked.
async fn follow_revocations(hub: Arc<Hub>, mut revocations: broadcast::Receiver<Revocation>) {
    loop {
        let received = tokio::select! {
            r = revocations.recv() => r,
            () = hub.shutdown.wait() => return,
        };
        match received {
            Ok(revocation) => {
                let kicked = match Uuid::parse_str(&revocation.user_id) {
                    Ok(user) => hub.kick(&user, Some(&revocation.session_id), revocation.reason),
                    // Without a user id, find the session among all sockets.
                    Err(_) => kick_matching(&hub, revocation.reason, |c| {
                        *c.session_id == *revocation.session_id
                    }),
                };
                if kicked > 0 {
                    tracing::info!(session_id = %revocation.session_id, sockets = kicked, reason = revocation.reason.as_str_name(), "kicked revoked session");
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Some revocations were missed: the verifier's deny set still has them.
                let kicked = kick_matching(&hub, pb::RevocationReason::SessionRevoked, |c| {
                    hub.verifier.is_denied(&c.session_id)
                });
                tracing::warn!(
                    missed,
                    kicked,
                    "revocation stream lagged; re-checked every socket"
                );
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn kick_matching(
    hub: &Hub,
    reason: pb::RevocationReason,
    matches: impl Fn(&Conn) -> bool,
) -> usize {
    let mut kicked = 0;
    for conn in hub.registry.snapshot() {
        if matches(&conn) {
            conn.outbox.close(CloseReason::Kicked(reason));
            kicked += 1;
        }
    }
    kicked
}

/// On shutdown: unregisters every socket from presence first (so publishers stop
/// routing events here), then closes the sockets (1001) and waits for them to end,
/// all within the drain timeout.
async fn drain_on_shutdown(hub: Arc<Hub>) {
    hub.shutdown.wait().await;
    let deadline = tokio::time::Instant::now() + hub.config.drain_timeout;
    let sockets = hub.registry.snapshot();
    let count = sockets.len();
    for conn in &sockets {
        hub.unregister(conn);
    }
    wait_until(deadline, || {
        hub.unregister_pending.load(Ordering::Acquire) == 0
    })
    .await;
    for conn in &sockets {
        conn.outbox.close(CloseReason::Shutdown);
    }
    drop(sockets);
    wait_until(deadline, || {
        hub.registry.connections() == 0 && hub.unregister_pending.load(Ordering::Acquire) == 0
    })
    .await;
    tracing::info!(
        sockets = count,
        left = hub.registry.connections(),
        "websocket hub drained"
    );
    hub.drained.cancel();
}

async fn wait_until(deadline: tokio::time::Instant, done: impl Fn() -> bool) {
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
