//! The indexer: the durable queue `<installation>.search.index` into the backend.
//!
//! Deliveries are gathered into a batch until `batch_size` events or `batch_interval`
//! after the batch's first event, indexed in one commit, and only then acknowledged:
//! a crash before the commit redelivers them, and indexing by message id makes the
//! redelivery harmless. Message events are routed to index changes: `message` puts a
//! document, `message_edited` replaces it, `message_deleted` deletes it (by id). An
//! undecodable delivery, or one that is not a message event, is rejected to the
//! dead-letter queue at once, and so is an event the backend refuses for good (a
//! poison document); the rest of its batch is acknowledged. When the backend fails,
//! the batch is not acknowledged; the session is restarted and the broker redelivers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beehive_common::event_batch;
use beehive_common::events::{self, Names};
use beehive_common::{Settings, Shutdown};
use beehive_proto::v1 as pb;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;

use crate::backend::embedded::micros;
use crate::backend::{Backend, Change};
use crate::config::SearchConfig;

/// Largest event decoded (a message is at most 16 KiB of content).
const MAX_EVENT_BYTES: usize = 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest wait for one broker operation.
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an indexing session ended.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker operation timed out: {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Backend(#[from] crate::backend::BackendError),
}

async fn bounded<T>(
    what: &'static str,
    future: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, IndexerError> {
    tokio::time::timeout(BROKER_TIMEOUT, future)
        .await
        .map_err(|_| IndexerError::Timeout(what))?
        .map_err(IndexerError::from)
}

/// The consumer of the index queue.
pub struct Indexer {
    settings: Settings,
    names: Names,
    config: SearchConfig,
    backend: Arc<dyn Backend>,
    consuming: Arc<AtomicBool>,
}

struct Session {
    connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
}

impl Indexer {
    /// An indexer into `backend`.
    pub fn new(settings: &Settings, config: SearchConfig, backend: Arc<dyn Backend>) -> Self {
        Self {
            settings: settings.clone(),
            names: Names::new(settings),
            config,
            backend,
            consuming: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the indexer is consuming now (readiness and tests).
    pub fn consuming(&self) -> Arc<AtomicBool> {
        self.consuming.clone()
    }

    /// Declares the queue (so events are kept from now on, even before consuming).
    pub async fn declare(&self) -> Result<(), IndexerError> {
        let session = self.open().await?;
        let _ = session.connection.close(0, "declared".into()).await;
        Ok(())
    }

    async fn open(&self) -> Result<Session, IndexerError> {
        let properties = lapin::ConnectionProperties::default()
            .with_connection_name(self.names.search_index_queue.clone().into());
        let connection = bounded(
            "connect",
            lapin::Connection::connect(self.settings.amqp_url.expose(), properties),
        )
        .await?;
        let channel = bounded("channel", connection.create_channel()).await?;
        let queue = bounded(
            "declare the index queue",
            events::declare_search_queue(&channel, &self.names),
        )
        .await?;
        Ok(Session {
            connection,
            channel,
            queue,
        })
    }

    /// Consumes until `shutdown`, reconnecting after failures.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = BACKOFF_MIN;
        while !shutdown.is_triggered() {
            match self.open().await {
                Ok(session) => {
                    let result = self.consume(&session, &shutdown).await;
                    self.consuming.store(false, Ordering::Release);
                    metrics::gauge!("beehive_search_indexer_consuming").set(0.0);
                    let close = session
                        .connection
                        .close(0, "search indexer stopping".into());
                    let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
                    match result {
                        Ok(()) => return,
                        Err(error) => {
                            tracing::warn!(%error, queue = %session.queue, "search indexer failed; reconnecting");
                            backoff = BACKOFF_MIN;
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "cannot reach RabbitMQ for indexing; retrying");
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.wait() => return,
            }
        }
    }

    async fn consume(&self, session: &Session, shutdown: &Shutdown) -> Result<(), IndexerError> {
        let prefetch = u16::try_from(self.config.batch_size.saturating_mul(2)).unwrap_or(u16::MAX);
        bounded(
            "basic.qos",
            session
                .channel
                .basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
        let mut consumer = bounded(
            "basic.consume",
            session.channel.basic_consume(
                session.queue.as_str().into(),
                format!("search-{}", self.settings.instance_id).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        self.consuming.store(true, Ordering::Release);
        metrics::gauge!("beehive_search_indexer_consuming").set(1.0);
        tracing::info!(queue = %session.queue, "search indexer consuming");
        let mut batch: Vec<(lapin::message::Delivery, Decoded)> = Vec::new();
        // Index changes in `batch` (a delivery may carry many).
        let mut pending = 0usize;
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let flush_at = deadline;
            let next = tokio::select! {
                item = consumer.next() => Some(item),
                () = async {
                    match flush_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => None,
                () = shutdown.wait() => {
                    // Finish what was taken: acknowledged only once committed.
                    self.flush(&mut batch).await?;
                    return Ok(());
                }
            };
            let Some(item) = next else {
                self.flush(&mut batch).await?;
                pending = 0;
                deadline = None;
                continue;
            };
            let delivery = match item {
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
            match decode(kind, &delivery.data) {
                Some(decoded) => {
                    pending += decoded.changes.len();
                    batch.push((delivery, decoded));
                    if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + self.config.batch_interval);
                    }
                    if pending >= self.config.batch_size {
                        self.flush(&mut batch).await?;
                        pending = 0;
                        deadline = None;
                    }
                }
                None => {
                    tracing::warn!(
                        bytes = delivery.data.len(),
                        "undecodable or foreign event sent to the dead-letter queue"
                    );
                    metrics::counter!("beehive_search_events_rejected_total").increment(1);
                    bounded(
                        "basic.reject",
                        delivery.acker.reject(BasicRejectOptions { requeue: false }),
                    )
                    .await?;
                }
            }
        }
    }

    /// Indexes the batch in one commit, then acknowledges it (and dead-letters what
    /// the backend refused for good).
    async fn flush(
        &self,
        batch: &mut Vec<(lapin::message::Delivery, Decoded)>,
    ) -> Result<(), IndexerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let taken = std::mem::take(batch);
        // Which delivery each change came from.
        let mut origin: Vec<usize> = Vec::new();
        let mut changes: Vec<Change> = Vec::new();
        for (index, (_, decoded)) in taken.iter().enumerate() {
            origin.extend(std::iter::repeat_n(index, decoded.changes.len()));
            changes.extend(decoded.changes.iter().cloned());
        }
        let size = changes.len();
        let newest = changes
            .iter()
            .filter_map(Change::message)
            .map(|m| micros(m.created_at.as_ref()))
            .max();
        let started = std::time::Instant::now();
        let ids: Vec<String> = changes.iter().map(|c| c.id().to_owned()).collect();
        let applied = self.backend.apply(changes).await?;
        // A delivery with a refused change (or a foreign event) goes to the dead-letter
        // queue, after its good changes were committed: re-applying them is harmless.
        let mut dead: Vec<bool> = taken.iter().map(|(_, d)| d.poisoned > 0).collect();
        for (position, reason) in &applied.rejected {
            if let (Some(&delivery), Some(id)) = (origin.get(*position), ids.get(*position)) {
                dead[delivery] = true;
                tracing::error!(
                    message_id = %id,
                    %reason,
                    backend = self.backend.name(),
                    "the index refused a document; its event goes to the dead-letter queue"
                );
            }
        }
        // Settle in delivery order: a `multiple` ack of the last good delivery covers
        // every earlier good one in one frame (they came on this channel in order), and
        // dead ones are rejected first so the ack cannot cover them.
        let mut last_good: Option<&lapin::message::Delivery> = None;
        for ((delivery, _), dead) in taken.iter().zip(&dead) {
            if *dead {
                if let Some(good) = last_good.take() {
                    bounded(
                        "basic.ack",
                        good.acker.ack(BasicAckOptions { multiple: true }),
                    )
                    .await?;
                }
                bounded(
                    "basic.reject",
                    delivery.acker.reject(BasicRejectOptions { requeue: false }),
                )
                .await?;
            } else {
                last_good = Some(delivery);
            }
        }
        if let Some(good) = last_good {
            bounded(
                "basic.ack",
                good.acker.ack(BasicAckOptions { multiple: true }),
            )
            .await?;
        }
        let refused = applied.rejected.len();
        metrics::counter!("beehive_search_documents_indexed_total")
            .increment((size - refused) as u64);
        if refused > 0 {
            metrics::counter!("beehive_search_events_rejected_total").increment(refused as u64);
        }
        metrics::histogram!("beehive_search_batch_size").record(size as f64);
        metrics::histogram!("beehive_search_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        let lag = newest
            .map(|newest| (chrono::Utc::now().timestamp_micros() - newest).max(0) as f64 / 1e6);
        if let Some(lag) = lag {
            metrics::gauge!("beehive_search_index_lag_seconds").set(lag);
        }
        tracing::debug!(
            size,
            refused,
            lag_seconds = lag,
            backend = self.backend.name(),
            "search batch committed"
        );
        Ok(())
    }
}

/// The index changes of one delivery, and how many of its events were not message
/// events (foreign or malformed: the delivery is dead-lettered once its good changes
/// are committed).
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub changes: Vec<Change>,
    pub poisoned: usize,
}

/// The changes of a delivery (one event, or a batch when `kind` says so); `None` when
/// it is not readable at all or carries nothing to index (a poison delivery).
pub fn decode(kind: Option<&str>, data: &[u8]) -> Option<Decoded> {
    let events = event_batch::decode_events(kind, data, MAX_EVENT_BYTES).ok()?;
    let total = events.len();
    let changes: Vec<Change> = events.into_iter().filter_map(change_of).collect();
    if changes.is_empty() {
        return None;
    }
    Some(Decoded {
        poisoned: total - changes.len(),
        changes,
    })
}

/// The index change of a message event; `None` for anything else.
fn change_of(event: pb::Event) -> Option<Change> {
    use pb::event::Payload;
    match event.payload? {
        Payload::Message(message) if !message.id.is_empty() => Some(Change::Put(message)),
        Payload::MessageEdited(pb::MessageEdited {
            message: Some(message),
        }) if !message.id.is_empty() => Some(Change::Edit(message)),
        Payload::MessageDeleted(deleted) if !deleted.message_id.is_empty() => {
            Some(Change::Delete {
                id: deleted.message_id,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn encoded(payload: pb::event::Payload) -> Vec<u8> {
        pb::Event {
            payload: Some(payload),
            ..pb::Event::default()
        }
        .encode_to_vec()
    }

    fn one(change: Change) -> Option<Decoded> {
        Some(Decoded {
            changes: vec![change],
            poisoned: 0,
        })
    }

    #[test]
    fn message_events_decode_to_index_changes() {
        let message = pb::Message {
            id: "m".into(),
            content: "hi".into(),
            ..pb::Message::default()
        };
        assert_eq!(
            decode(None, &encoded(pb::event::Payload::Message(message.clone()))),
            one(Change::Put(message.clone()))
        );
        assert_eq!(
            decode(
                None,
                &encoded(pb::event::Payload::MessageEdited(pb::MessageEdited {
                    message: Some(message.clone()),
                }))
            ),
            one(Change::Edit(message))
        );
        assert_eq!(
            decode(
                None,
                &encoded(pb::event::Payload::MessageDeleted(pb::MessageDeleted {
                    message_id: "m".into(),
                    conversation_id: "c".into(),
                    seq: 3,
                }))
            ),
            one(Change::Delete { id: "m".into() })
        );
        // Poison: other events, empty ids, garbage, oversized.
        for bad in [
            encoded(pb::event::Payload::Typing(pb::TypingEvent::default())),
            encoded(pb::event::Payload::Message(pb::Message::default())),
            encoded(pb::event::Payload::MessageEdited(
                pb::MessageEdited::default(),
            )),
            encoded(pb::event::Payload::MessageDeleted(
                pb::MessageDeleted::default(),
            )),
            pb::Event::default().encode_to_vec(),
            b"\xff\xff\xff not protobuf".to_vec(),
            vec![0u8; MAX_EVENT_BYTES + 1],
        ] {
            assert_eq!(decode(None, &bad), None);
        }
    }

    #[test]
    fn a_batch_decodes_to_its_changes_in_order_and_counts_foreign_events() {
        let put = |id: &str| pb::Message {
            id: id.into(),
            content: "消息".into(),
            ..pb::Message::default()
        };
        let batch = pb::EventBatch {
            events: vec![
                pb::Event {
                    payload: Some(pb::event::Payload::Message(put("a"))),
                    ..pb::Event::default()
                },
                pb::Event {
                    payload: Some(pb::event::Payload::Typing(pb::TypingEvent::default())),
                    ..pb::Event::default()
                },
                pb::Event {
                    payload: Some(pb::event::Payload::MessageDeleted(pb::MessageDeleted {
                        message_id: "b".into(),
                        ..pb::MessageDeleted::default()
                    })),
                    ..pb::Event::default()
                },
            ],
        };
        let bytes = batch.encode_to_vec();
        assert_eq!(
            decode(Some(event_batch::EVENT_BATCH_TYPE), &bytes),
            Some(Decoded {
                changes: vec![Change::Put(put("a")), Change::Delete { id: "b".into() }],
                poisoned: 1,
            })
        );
        // Without the batch type the same bytes are not one event.
        assert_eq!(decode(None, &bytes), None);
    }
}
