//! The event consumer: this gateway instance's RabbitMQ queue into an [`EventSink`]
//! (the hub, in the running gateway; the consumer does not know it).
//!
//! Publishers route each event to the instances that hold its recipients (routing key
//! = instance id), so this instance consumes only its own queue and only gets what its
//! users need. A delivery is one event or a batch of them (the outbox relay sends one
//! batch per relay round). Each decoded event is handed to the sink, which queues it for the local
//! sockets of its recipients. Deliveries are acknowledged in batches (`multiple`)
//! after the sink took them; a frame lost in a crash after that is
//! recovered by the client's `sync`. Undecodable deliveries are rejected to the
//! dead-letter queue. After a broker restart the consumer reconnects with backoff and
//! re-declares its queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beehive_common::event_batch;
use beehive_common::events::{self, Names};
use beehive_common::{Settings, Shutdown};
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;

use crate::app::events::EventSink;

/// Unacknowledged deliveries the broker may send ahead. The relay's deliveries are
/// batches (up to `event_batch::MAX_BATCH_BYTES` each), so this also bounds the memory
/// a slow gateway holds for the broker: 256 x 512 KiB at most, far less in practice.
const PREFETCH: u16 = 256;
/// Deliveries acknowledged with one `multiple` ack at most.
const ACK_BATCH: usize = 64;
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

    /// Consumes until `shutdown`, handing every event to `sink`, reconnecting after
    /// failures.
    pub async fn run(mut self, sink: Arc<dyn EventSink>, shutdown: Shutdown) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let session = match self.first.take() {
                Some(session) => Ok(session),
                None => open(&self.settings, &self.names).await,
            };
            match session {
                Ok(session) => {
                    let result = consume(
                        &session,
                        sink.as_ref(),
                        &self.settings.instance_id,
                        &self.state,
                        &shutdown,
                    )
                    .await;
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
    sink: &dyn EventSink,
    instance_id: &str,
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
            format!("gateway-{instance_id}").into(),
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
        let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
        match event_batch::decode_events(kind, &delivery.data, MAX_EVENT_BYTES) {
            Ok(events) => {
                let count = events.len();
                let mut delivered = 0;
                for event in events {
                    delivered += sink.deliver(event);
                }
                metrics::counter!("beehive_push_events_total").increment(count as u64);
                metrics::counter!("beehive_push_frames_total").increment(delivered as u64);
                unacked = Some(delivery);
                unacked_count += 1;
                if unacked_count >= ACK_BATCH
                    && let Some(last) = unacked.take()
                {
                    ack_through(&last).await?;
                    unacked_count = 0;
                }
            }
            Err(error) => {
                // Settle the good ones first so `multiple` cannot cover this one.
                if let Some(last) = unacked.take() {
                    ack_through(&last).await?;
                    unacked_count = 0;
                }
                tracing::warn!(
                    bytes = delivery.data.len(),
                    %error,
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
