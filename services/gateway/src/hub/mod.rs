//! The connection hub: this instance's live sockets and the background work that
//! serves them.
//!
//! A socket is registered (locally and with the presence service, see
//! [`Hub::register`]) before the 101 response, so every event committed after the
//! client saw the 101 is routed here and finds the socket. The [`Registration`] a
//! socket holds is the one place that undoes a registration, whenever and however the
//! socket ends (a failed presence call, a revoked session, a failed upgrade, a closed
//! socket). The hub takes events for its sockets as an [`EventSink`] (from the event
//! consumer, which it does not know) and queues their frames in each socket's bounded
//! outbox. Around the sockets it runs a batched presence heartbeat, a batched
//! unregister worker, the revocation listener that kicks revoked sessions, and the
//! shutdown drain: every socket is told to `reconnect` elsewhere, then the sockets are
//! unregistered and closed in waves spread over the drain window ([`drain`]), while
//! the heartbeat, the revocation listener and the event consumer keep serving the
//! sockets not closed yet.

pub mod drain;
pub(crate) mod registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use beehive_common::{Error, Shutdown};
use beehive_proto::v1 as pb;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::app::events::EventSink;
use crate::auth::{Revocation, TokenVerifier};
use crate::clients::Clients;
use crate::config::WsConfig;
use crate::wire::frame;
use drain::DrainPlan;
use registry::{CloseReason, Conn, Fanout, Registry};

/// This instance's sockets and the background work that serves them.
pub struct Hub {
    pub(crate) registry: Registry,
    pub(crate) config: WsConfig,
    pub(crate) instance_id: String,
    pub(crate) clients: Clients,
    verifier: Arc<TokenVerifier>,
    /// Bounds concurrent registrations (see [`WsConfig::register_concurrency`]).
    register_permits: tokio::sync::Semaphore,
    pub(crate) shutdown: Shutdown,
    unregister_tx: mpsc::UnboundedSender<pb::Connection>,
    /// Unregistrations queued or in flight (shutdown waits for zero).
    unregister_pending: AtomicUsize,
    /// Fired once the shutdown drain has closed and unregistered every socket (or its
    /// window and grace ran out).
    drained: CancellationToken,
}

impl Hub {
    /// Starts the hub: the heartbeat, unregister worker, revocation listener and
    /// shutdown sequence. Events reach it through [`EventSink`]; whoever consumes them
    /// must be attached before sockets are accepted.
    pub fn start(
        instance_id: String,
        clients: &Clients,
        verifier: Arc<TokenVerifier>,
        config: WsConfig,
        shutdown: &Shutdown,
    ) -> Arc<Hub> {
        let (unregister_tx, unregister_rx) = mpsc::unbounded_channel();
        let revocations = verifier.subscribe();
        let register_permits = tokio::sync::Semaphore::new(config.register_concurrency.max(1));
        let hub = Arc::new(Hub {
            registry: Registry::new(64),
            config,
            instance_id,
            clients: clients.clone(),
            verifier,
            shutdown: shutdown.clone(),
            unregister_tx,
            unregister_pending: AtomicUsize::new(0),
            register_permits,
            drained: CancellationToken::new(),
        });
        tokio::spawn(heartbeat(hub.clone()));
        tokio::spawn(unregister_worker(hub.clone(), unregister_rx));
        tokio::spawn(follow_revocations(hub.clone(), revocations));
        tokio::spawn(drain_on_shutdown(hub.clone()));
        tracing::info!(instance_id = %hub.instance_id, "websocket hub started");
        hub
    }

    /// Registers a socket of `user_id` (locally, then with presence) and returns the
    /// guard that undoes it. Fails when presence cannot record it (the socket would
    /// silently miss live traffic), when the session was revoked meanwhile, or when
    /// the gateway is shutting down.
    pub async fn register(
        self: &Arc<Self>,
        user_id: Uuid,
        session_id: String,
        device_id: Option<String>,
    ) -> Result<Registration, Error> {
        let shutting_down = || Error::Unavailable("the gateway is shutting down".to_owned());
        if self.shutdown.is_triggered() {
            return Err(shutting_down());
        }
        let id = Uuid::now_v7();
        let conn = Arc::new(Conn::new(
            id,
            user_id,
            session_id.into(),
            // A client that names no device is its own device: its own messages then
            // reach only this socket's ack, and every other socket of the user.
            device_id
                .unwrap_or_else(|| id.hyphenated().to_string())
                .into(),
            self.config.queue_capacity,
        ));
        self.registry.insert(conn.clone());
        // From here on, dropping the guard (an early return included) rolls back.
        let registration = Registration {
            hub: self.clone(),
            conn,
        };
        let request = pb::RegisterConnectionRequest {
            instance_id: self.instance_id.clone(),
            connection: Some(registration.conn.to_proto()),
        };
        {
            let _permit = self
                .register_permits
                .acquire()
                .await
                .map_err(|_| shutting_down())?;
            self.clients.register_connection(request).await?;
        }
        // A revocation that arrived between verification and registration found no
        // socket to kick; the deny set still knows it.
        if self.verifier.is_denied(&registration.conn.session_id) {
            return Err(Error::unauthenticated());
        }
        // A shutdown that fired meanwhile may have taken its drain snapshot before this
        // socket was inserted: it would never be told to reconnect.
        if self.shutdown.is_triggered() {
            return Err(shutting_down());
        }
        Ok(registration)
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

    /// Whether the gateway is draining (shutting down): it refuses new sockets and
    /// its `/readyz` fails, so the Service stops routing to it.
    pub fn is_draining(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// Completes once the shutdown drain has closed every socket and unregistered it
    /// from presence (or the drain window and grace ran out). Await it before the
    /// process exits.
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

    /// Queues the presence unregistration of a socket that is gone or about to close
    /// (once per socket, whoever asks first).
    pub(crate) fn unregister(&self, conn: &Conn) {
        if !conn.mark_unregistered() {
            return;
        }
        self.unregister_pending.fetch_add(1, Ordering::AcqRel);
        if self.unregister_tx.send(conn.to_proto()).is_err() {
            self.unregister_pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A socket's registration, undone when dropped: the socket leaves the registry and
/// is unregistered from presence (unless the shutdown drain already did that before
/// closing it). The only rollback of a registration.
pub struct Registration {
    hub: Arc<Hub>,
    conn: Arc<Conn>,
}

impl Registration {
    /// The hub the socket is registered with.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The registered socket.
    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.registry.remove(&self.conn);
        // Presence may have stored it even if the register call failed.
        self.hub.unregister(&self.conn);
    }
}

impl EventSink for Hub {
    /// Pushes one event to the local sockets it is for: kicks close sockets, every
    /// other payload is encoded once and queued on each recipient device.
    fn deliver(&self, event: pb::Event) -> usize {
        if let Some(pb::event::Payload::Kick(kick)) = &event.payload {
            let reason = pb::RevocationReason::try_from(kick.reason)
                .unwrap_or(pb::RevocationReason::SessionRevoked);
            let session = (!kick.session_id.is_empty()).then_some(kick.session_id.as_str());
            if let Ok(user) = Uuid::parse_str(&kick.user_id) {
                self.kick(&user, session, reason);
            }
            return 0;
        }
        fan_out(&self.registry, &event).delivered
    }
}

/// Queues `event`'s frame on every local socket of its recipients.
fn fan_out(registry: &Registry, event: &pb::Event) -> Fanout {
    let Some(frame) = event.payload.as_ref().and_then(frame::event) else {
        return Fanout::default();
    };
    let exclude_user = Uuid::parse_str(&event.exclude_device_user_id).ok();
    let mut total = Fanout::default();
    for recipient in &event.recipient_ids {
        let Ok(user) = Uuid::parse_str(recipient) else {
            continue;
        };
        let exclude = (exclude_user == Some(user) && !event.exclude_device_id.is_empty())
            .then_some(event.exclude_device_id.as_str());
        let fanout = registry.push(&user, &frame, exclude);
        total.delivered += fanout.delivered;
        total.overflowed += fanout.overflowed;
    }
    if total.overflowed > 0 {
        metrics::counter!("beehive_ws_overflows_total").increment(total.overflowed as u64);
    }
    total
}

/// Refreshes every local socket's presence registration, in batches, so that the
/// registrations of a gateway that dies expire after the presence TTL while live ones
/// never do. It runs through the shutdown drain (the sockets of the last waves must
/// stay routable for the whole window) and skips sockets already unregistered.
async fn heartbeat(hub: Arc<Hub>) {
    let mut period = hub.config.heartbeat_interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = hub.drained.cancelled() => return,
        }
        let mut sockets = hub.registry.snapshot();
        sockets.retain(|conn| !conn.is_unregistered());
        for batch in sockets.chunks(hub.config.heartbeat_batch.max(1)) {
            let request = pb::HeartbeatRequest {
                instance_id: hub.instance_id.clone(),
                connections: batch.iter().map(|c| c.to_proto()).collect(),
            };
            match hub.clients.heartbeat(request).await {
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
                Err(error) => {
                    tracing::warn!(%error, sockets = batch.len(), "presence heartbeat failed");
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
            if let Err(error) = hub.clients.unregister_connection(request).await {
                // The registration expires with the presence TTL once heartbeats stop
                // naming it, so this is a delay, not a leak.
                tracing::warn!(%error, "unregistering a socket failed");
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

/// Kicks sockets of sessions the verifier learns are revoked, also during the drain.
async fn follow_revocations(hub: Arc<Hub>, mut revocations: broadcast::Receiver<Revocation>) {
    loop {
        let received = tokio::select! {
            r = revocations.recv() => r,
            () = hub.drained.cancelled() => return,
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

/// How long a wave waits at least for its presence unregistrations before closing
/// its sockets anyway (so a slow presence service cannot stall a zero window).
const UNREGISTER_WAIT: Duration = Duration::from_millis(200);

/// On shutdown (the gateway already refuses new sockets and fails readiness): tells
/// every socket to `reconnect` after its planned delay, then closes the sockets wave
/// by wave over the drain window. Each wave is unregistered from presence first (so
/// publishers stop routing its users here; events already routed still reach its
/// sockets), then closed; a closing socket writes what it has queued before its close
/// frame. Ends when every socket is gone, or the window plus the grace ran out.
async fn drain_on_shutdown(hub: Arc<Hub>) {
    hub.shutdown.wait().await;
    let started = tokio::time::Instant::now();
    let window = hub.config.drain_window;
    let deadline = started + window + hub.config.drain_grace;
    let sockets = hub.registry.snapshot();
    let plan = DrainPlan::new(sockets.len(), window);
    tracing::info!(
        sockets = sockets.len(),
        waves = plan.waves().len(),
        window_ms = window.as_millis() as u64,
        "websocket hub draining"
    );
    for (index, conn) in sockets.iter().enumerate() {
        let after = plan.reconnect_after(index).unwrap_or(window);
        conn.outbox.push(frame::reconnect(after));
    }
    // When the previous wave's sockets were closed: a wave that ran late (slow
    // unregistrations) must not drag the next one along with it, or the two would
    // reach the other gateways as one burst.
    let mut previous_closed: Option<tokio::time::Instant> = None;
    for (number, wave) in plan.waves().iter().enumerate() {
        let planned = started + wave.offset;
        let spaced = previous_closed.map_or(planned, |at| {
            planned.max(at + plan.wave_interval() / 2).min(deadline)
        });
        tokio::time::sleep_until(spaced).await;
        let batch = &sockets[wave.sockets.clone()];
        for conn in batch {
            hub.unregister(conn);
        }
        // How long each step of the wave may wait: until the next wave is due, at least
        // UNREGISTER_WAIT, never past the deadline.
        let wait_bound = || {
            (started + plan.next_offset(number))
                .max(tokio::time::Instant::now() + UNREGISTER_WAIT)
                .min(deadline)
        };
        wait_until(wait_bound(), || {
            hub.unregister_pending.load(Ordering::Acquire) == 0
        })
        .await;
        for conn in batch {
            conn.outbox.close(CloseReason::Shutdown);
        }
        // The wave is over once its sockets wrote their queues and close frames and
        // left the registry (a stalled one is cut off by its write timeout).
        wait_until(wait_bound(), || {
            batch.iter().all(|conn| !hub.registry.contains(conn))
        })
        .await;
        previous_closed = Some(tokio::time::Instant::now());
        metrics::counter!("beehive_ws_drain_waves_total").increment(1);
        tracing::debug!(
            wave = number,
            sockets = batch.len(),
            "closing a wave of sockets for shutdown"
        );
    }
    drop(sockets);
    wait_until(deadline, || {
        hub.registry.connections() == 0 && hub.unregister_pending.load(Ordering::Acquire) == 0
    })
    .await;
    tracing::info!(
        waves = plan.waves().len(),
        left = hub.registry.connections(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "websocket hub drained"
    );
    hub.drained.cancel();
}

async fn wait_until(deadline: tokio::time::Instant, done: impl Fn() -> bool) {
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry::Taken;

    fn socket(registry: &Registry, user: Uuid, device: &str) -> Arc<Conn> {
        let conn = Arc::new(Conn::new(
            Uuid::now_v7(),
            user,
            "s".into(),
            device.into(),
            16,
        ));
        registry.insert(conn.clone());
        conn
    }

    fn taken(conn: &Conn) -> Vec<String> {
        match conn.outbox.take() {
            Taken::Frames(f) => f.into_iter().map(|f| f.to_string()).collect(),
            Taken::Close(r) => panic!("closing {r:?}"),
        }
    }

    /// A hub whose presence service cannot be reached (nothing listens on port 1).
    fn hub_without_presence() -> Arc<Hub> {
        let map = [(
            "BEEHIVE_PRESENCE_ADDR".to_owned(),
            "http://127.0.0.1:1".to_owned(),
        )]
        .into();
        let (settings, _) = beehive_common::Settings::from_map(&map).expect("settings");
        let shutdown = Shutdown::new();
        let clients = Clients::connect(&settings, &shutdown).expect("clients");
        let verifier = Arc::new(TokenVerifier::new(
            clients.auth_for_verifier(),
            Duration::from_secs(60),
        ));
        let config = crate::config::WsConfig::from_settings(&settings);
        Hub::start("test".to_owned(), &clients, verifier, config, &shutdown)
    }

    #[tokio::test]
    async fn a_failed_registration_leaves_nothing_behind() {
        let hub = hub_without_presence();
        let registered = hub
            .register(
                Uuid::now_v7(),
                "session".to_owned(),
                Some("phone".to_owned()),
            )
            .await;
        let Err(error) = registered else {
            panic!("registered without a presence service");
        };
        assert_eq!(error.code(), beehive_common::ErrorCode::Unavailable);
        // The guard removed the socket and queued its unregistration (presence may
        // have stored it before the call failed).
        assert_eq!((hub.connections(), hub.users()), (0, 0));
        assert!(hub.unregister_pending.load(Ordering::Acquire) <= 1);
    }

    #[tokio::test]
    async fn no_registration_during_shutdown() {
        let hub = hub_without_presence();
        hub.shutdown.trigger();
        let registered = hub.register(Uuid::now_v7(), "s".to_owned(), None).await;
        assert!(matches!(registered, Err(Error::Unavailable(_))));
        assert_eq!(hub.connections(), 0);
    }

    #[test]
    fn message_reaches_every_device_but_the_senders_own() {
        let registry = Registry::new(4);
        let (alice, bob, carol) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let alice_phone = socket(&registry, alice, "phone");
        let alice_laptop = socket(&registry, alice, "laptop");
        let bob_1 = socket(&registry, bob, "1");
        let bob_2 = socket(&registry, bob, "2");
        let carol_1 = socket(&registry, carol, "1");
        let event = pb::Event {
            recipient_ids: vec![alice.to_string(), bob.to_string(), "not-a-uuid".into()],
            exclude_device_user_id: alice.to_string(),
            exclude_device_id: "phone".into(),
            payload: Some(pb::event::Payload::Message(pb::Message {
                id: "m".into(),
                seq: 1,
                content: "hello".into(),
                ..Default::default()
            })),
        };
        let fanout = fan_out(&registry, &event);
        assert_eq!(fanout.delivered, 3);
        assert!(taken(&alice_phone).is_empty());
        for conn in [&alice_laptop, &bob_1, &bob_2] {
            let frames = taken(conn);
            assert_eq!(frames.len(), 1);
            let json: serde_json::Value = serde_json::from_str(&frames[0]).expect("json");
            assert_eq!(json["type"], "message");
            assert_eq!(json["data"]["message"]["content"], "hello");
        }
        // Bob's device "1" is not excluded by Alice's exclusion of "phone"/"1".
        assert!(taken(&carol_1).is_empty());
    }

    #[test]
    fn exclusion_applies_only_to_the_named_user() {
        let registry = Registry::new(4);
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let bob_phone = socket(&registry, bob, "phone");
        let event = pb::Event {
            recipient_ids: vec![bob.to_string()],
            exclude_device_user_id: alice.to_string(),
            exclude_device_id: "phone".into(),
            payload: Some(pb::event::Payload::Typing(pb::TypingEvent::default())),
        };
        assert_eq!(fan_out(&registry, &event).delivered, 1);
        assert_eq!(taken(&bob_phone).len(), 1);
    }

    #[test]
    fn the_frame_is_encoded_once_and_shared() {
        let registry = Registry::new(4);
        let user = Uuid::now_v7();
        let a = socket(&registry, user, "a");
        let b = socket(&registry, user, "b");
        let event = pb::Event {
            recipient_ids: vec![user.to_string()],
            payload: Some(pb::event::Payload::Presence(pb::PresenceEvent {
                user_id: "x".into(),
                online: true,
            })),
            ..Default::default()
        };
        fan_out(&registry, &event);
        let (Taken::Frames(fa), Taken::Frames(fb)) = (a.outbox.take(), b.outbox.take()) else {
            panic!("frames expected");
        };
        // Same allocation: Utf8Bytes clones share their buffer.
        assert_eq!(fa[0].as_str().as_ptr(), fb[0].as_str().as_ptr());
    }

    #[test]
    fn empty_payloads_push_nothing() {
        let registry = Registry::new(1);
        let user = Uuid::now_v7();
        let a = socket(&registry, user, "a");
        let event = pb::Event {
            recipient_ids: vec![user.to_string()],
            ..Default::default()
        };
        assert_eq!(fan_out(&registry, &event), Fanout::default());
        assert!(taken(&a).is_empty());
    }
}
