//! The push consumer: this gateway instance's RabbitMQ queue into its sockets.
//!
//! Publishers route each event to the instances that hold its recipients (routing key
//! = instance id), so this instance consumes only its own queue and only gets what its
//! users need. Each event is encoded into its frame once and the shared bytes are
//! queued on every local socket of every recipient. Deliveries are acknowledged in
//! batches (`multiple`) after they were queued; a frame lost in a crash after that is
//! recovered by the client's `sync`. Undecodable deliveries are rejected to the
//! dead-letter queue. After a broker restart the consumer reconnects with backoff and
//! re-declares its queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beehive_common::events::{self, Names};
use beehive_common::{Settings, Shutdown};
use beehive_proto::v1 as pb;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use prost::Message as _;
use uuid::Uuid;

use crate::ws::Hub;
use crate::ws::frame;
use crate::ws::registry::{Fanout, Registry};

/// Unacknowledged deliveries the broker may send ahead (STACK.md: ~16k msg/s at 1000).
const PREFETCH: u16 = 1000;
/// Deliveries acknowledged with one `multiple` ack at most.
const ACK_BATCH: usize = 256;
/// Bounds of the reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long start-up keeps trying to reach RabbitMQ before the gateway fails.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for one broker operation (connect and declare, qos, consume, ack).
/// A connection that dies mid-operation must surface as an error and a reconnect,
/// never as a consumer parked forever while its queue fills.
const BROKER_OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the close handshake of a connection being abandoned.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Payloads above this are not ours (events are a few KiB at most).
const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Why the consumer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// RabbitMQ could not be reached (or refused the declaration) within the start-up
    /// timeout; the gateway must not accept sockets it could not deliver to.
    #[error("cannot reach RabbitMQ to declare this gateway's event queue: {0}")]
    Unreachable(String),
}

/// Why a consumer session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// A broker operation did not complete within [`BROKER_OP_TIMEOUT`].
    #[error("{0} did not complete within {BROKER_OP_TIMEOUT:?}")]
    Stalled(&'static str),
}

/// `op` bounded by [`BROKER_OP_TIMEOUT`].
async fn bounded<T>(
    op: &'static str,
    future: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(BROKER_OP_TIMEOUT, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SessionError::Stalled(op)),
    }
}

/// Shared view of the consumer for readiness.
#[derive(Debug, Default)]
pub struct ConsumerState {
    consuming: AtomicBool,
}

impl ConsumerState {
    /// Whether a consumer is attached to the queue right now.
    pub fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::Acquire)
    }
}

/// An open channel with this instance's queue declared.
struct Session {
    connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
}

/// The consumer of one gateway instance's queue.
pub struct Consumer {
    settings: Settings,
    names: Names,
    first: Option<Session>,
    state: Arc<ConsumerState>,
}

impl Consumer {
    /// Connects and declares the instance's queue, retrying for a while: once this
    /// returns, events routed to this instance are kept for it.
    pub async fn connect(settings: &Settings) -> Result<Self, ConsumerError> {
        let names = Names::new(settings);
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut backoff = BACKOFF_MIN;
        let first = loop {
            match open(settings, &names).await {
                Ok(session) => break session,
                Err(error) if tokio::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(%error, "event queue not declared yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(error) => return Err(ConsumerError::Unreachable(error.to_string())),
            }
        };
        // Whatever waits in the queue now was routed to sockets of an earlier process
        // with this instance id (a restart): none of them exists any more, and their
        // clients catch up with `sync`. Pushing it to the new sockets would only
        // duplicate what their `sync` returns.
        match first
            .channel
            .queue_purge(first.queue.as_str().into(), QueuePurgeOptions::default())
            .await
        {
            Ok(purged) if purged > 0 => {
                tracing::info!(queue = %first.queue, purged, "dropped events of a previous process")
            }
            Ok(_) => {}
            Err(error) => return Err(ConsumerError::Unreachable(error.to_string())),
        }
        tracing::info!(queue = %first.queue, "gateway event queue declared");
        Ok(Self {
            settings: settings.clone(),
            names,
            first: Some(first),
            state: Arc::new(ConsumerState::default()),
        })
    }

    /// The readiness view.
    pub fn state(&self) -> Arc<ConsumerState> {
        self.state.clone()
    }

    /// Consumes until `shutdown`, reconnecting after failures.
    pub async fn run(mut self, hub: Arc<Hub>, shutdown: Shutdown) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let session = match self.first.take() {
                Some(session) => Ok(session),
                None => open(&self.settings, &self.names).await,
            };
            match session {
                Ok(session) => {
                    let result = consume(&session, &hub, &self.state, &shutdown).await;
                    self.state.consuming.store(false, Ordering::Release);
                    // Best effort: on a dead connection the close handshake may never
                    // complete, and the reconnect must not wait for it.
                    let close = session
                        .connection
                        .close(0, "gateway consumer stopping".into());
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
                    match result {
                        Ok(()) => return,
                        Err(error) => {
                            tracing::warn!(%error, queue = %session.queue, "event consumer failed; reconnecting");
                            backoff = BACKOFF_MIN;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "cannot reach RabbitMQ; retrying");
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.wait() => return,
            }
        }
    }
}

async fn open(settings: &Settings, names: &Names) -> Result<Session, SessionError> {
    bounded("connecting and declaring the queue", async {
        // Named after the queue, so operators can tell the gateways' connections apart.
        let properties = lapin::ConnectionProperties::default()
            .with_connection_name(names.gateway_queue(&settings.instance_id).into());
        let connection = lapin::Connection::connect(settings.amqp_url.expose(), properties).await?;
        let channel = connection.create_channel().await?;
        let queue = events::declare_gateway_queue(&channel, names, &settings.instance_id).await?;
        Ok(Session {
            connection,
            channel,
            queue,
        })
    })
    .await
}

/// Consumes one session until it fails (`Err`) or shutdown (`Ok`).
async fn consume(
    session: &Session,
    hub: &Hub,
    state: &ConsumerState,
    shutdown: &Shutdown,
) -> Result<(), SessionError> {
    bounded(
        "basic.qos",
        session
            .channel
            .basic_qos(PREFETCH, BasicQosOptions::default()),
    )
    .await?;
    let mut consumer = bounded(
        "basic.consume",
        session.channel.basic_consume(
            session.queue.as_str().into(),
            format!("gateway-{}", hub.instance_id).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    state.consuming.store(true, Ordering::Release);
    // The last delivery not yet acknowledged, and how many precede it unacknowledged.
    let mut unacked: Option<lapin::message::Delivery> = None;
    let mut unacked_count = 0usize;
    loop {
        // Take what is ready without waiting; acknowledge the batch before waiting.
        let next = match consumer.next().now_or_never() {
            Some(item) => item,
            None => {
                if let Some(last) = unacked.take() {
                    ack_through(&last).await?;
                    unacked_count = 0;
                }
                tokio::select! {
                    item = consumer.next() => item,
                    () = shutdown.wait() => return Ok(()),
                }
            }
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(error.into()),
            None => {
                return Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                    lapin::ChannelState::Closed,
                    "the broker cancelled the consumer",
                ))
                .into());
            }
        };
        let event = (delivery.data.len() <= MAX_EVENT_BYTES)
            .then(|| pb::Event::decode(delivery.data.as_slice()).ok())
            .flatten();
        match event {
            Some(event) => {
                let fanout = deliver(hub, event);
                metrics::counter!("beehive_push_events_total").increment(1);
                metrics::counter!("beehive_push_frames_total").increment(fanout.delivered as u64);
                unacked = Some(delivery);
                unacked_count += 1;
                if unacked_count >= ACK_BATCH
                    && let Some(last) = unacked.take()
                {
                    ack_through(&last).await?;
                    unacked_count = 0;
                }
            }
            None => {
                // Settle the good ones first so `multiple` cannot cover this one.
                if let Some(last) = unacked.take() {
                    ack_through(&last).await?;
                    unacked_count = 0;
                }
                tracing::warn!(
                    bytes = delivery.data.len(),
                    "undecodable event sent to the dead-letter queue"
                );
                metrics::counter!("beehive_push_rejected_total").increment(1);
                bounded(
                    "basic.reject",
                    delivery.acker.reject(BasicRejectOptions { requeue: false }),
                )
                .await?;
            }
        }
    }
}

async fn ack_through(delivery: &lapin::message::Delivery) -> Result<(), SessionError> {
    bounded(
        "basic.ack",
        delivery.acker.ack(BasicAckOptions { multiple: true }),
    )
    .await
    .map(|_| ())
}

/// Pushes one event to the local sockets it is for: kicks close sockets, every other
/// payload is encoded once and queued on each recipient device.
pub(crate) fn deliver(hub: &Hub, event: pb::Event) -> Fanout {
    if let Some(pb::event::Payload::Kick(kick)) = &event.payload {
        let reason = pb::RevocationReason::try_from(kick.reason)
            .unwrap_or(pb::RevocationReason::SessionRevoked);
        let session = (!kick.session_id.is_empty()).then_some(kick.session_id.as_str());
        if let Ok(user) = Uuid::parse_str(&kick.user_id) {
            hub.kick(&user, session, reason);
        }
        return Fanout::default();
    }
    fan_out(&hub.registry, &event)
}

/// Queues `event`'s frame on every local socket of its recipients.
pub(crate) fn fan_out(registry: &Registry, event: &pb::Event) -> Fanout {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::registry::{Conn, Outbox, Taken};

    fn socket(registry: &Registry, user: Uuid, device: &str) -> Arc<Conn> {
        let conn = Arc::new(Conn {
            id: Uuid::now_v7(),
            user_id: user,
            session_id: "s".into(),
            device_id: device.into(),
            outbox: Outbox::new(16),
        });
        registry.insert(conn.clone());
        conn
    }

    fn taken(conn: &Conn) -> Vec<String> {
        match conn.outbox.take() {
            Taken::Frames(f) => f.into_iter().map(|f| f.to_string()).collect(),
            Taken::Close(r) => panic!("closing {r:?}"),
        }
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
