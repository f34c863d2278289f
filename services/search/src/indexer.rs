//! The indexer: the durable queue `<installation>.search.index` into the backend.
//!
//! Deliveries are gathered into a batch until `batch_size` events or `batch_interval`
//! after the batch's first event, indexed in one commit, and only then acknowledged:
//! a crash before the commit redelivers them, and indexing by message id makes the
//! redelivery harmless. An undecodable delivery, or one that is not a message event,
//! is rejected to the dead-letter queue at once. When the backend fails, the batch is
//! not acknowledged; the session is restarted and the broker redelivers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use beehive_common::events::{self, Names};
use beehive_common::{Settings, Shutdown};
use beehive_proto::v1 as pb;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use prost::Message as _;

use crate::backend::Backend;
use crate::backend::embedded::micros;
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
        let mut batch: Vec<(lapin::message::Delivery, pb::Message)> = Vec::new();
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
            match decode(&delivery.data) {
                Some(message) => {
                    batch.push((delivery, message));
                    if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + self.config.batch_interval);
                    }
                    if batch.len() >= self.config.batch_size {
                        self.flush(&mut batch).await?;
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

    /// Indexes the batch in one commit, then acknowledges it.
    async fn flush(
        &self,
        batch: &mut Vec<(lapin::message::Delivery, pb::Message)>,
    ) -> Result<(), IndexerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let taken = std::mem::take(batch);
        let size = taken.len();
        let newest = taken
            .iter()
            .map(|(_, m)| micros(m.created_at.as_ref()))
            .max()
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let messages: Vec<pb::Message> = taken.iter().map(|(_, m)| m.clone()).collect();
        self.backend.index(messages).await?;
        for (delivery, _) in &taken {
            bounded("basic.ack", delivery.acker.ack(BasicAckOptions::default())).await?;
        }
        let lag = (chrono::Utc::now().timestamp_micros() - newest).max(0) as f64 / 1e6;
        metrics::counter!("beehive_search_documents_indexed_total").increment(size as u64);
        metrics::histogram!("beehive_search_batch_size").record(size as f64);
        metrics::histogram!("beehive_search_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!("beehive_search_index_lag_seconds").set(lag);
        tracing::debug!(
            size,
            lag_seconds = lag,
            backend = self.backend.name(),
            "search batch committed"
        );
        Ok(())
    }
}

/// The message of a message event; `None` for anything else (a poison delivery).
pub fn decode(data: &[u8]) -> Option<pb::Message> {
    if data.len() > MAX_EVENT_BYTES {
        return None;
    }
    match pb::Event::decode(data).ok()?.payload? {
        pb::event::Payload::Message(message) if !message.id.is_empty() => Some(message),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_message_events_decode() {
        let message = pb::Message {
            id: "m".into(),
            content: "hi".into(),
            ..pb::Message::default()
        };
        let event = pb::Event {
            payload: Some(pb::event::Payload::Message(message.clone())),
            ..pb::Event::default()
        };
        assert_eq!(decode(&event.encode_to_vec()), Some(message));
        let typing = pb::Event {
            payload: Some(pb::event::Payload::Typing(pb::TypingEvent::default())),
            ..pb::Event::default()
        };
        assert_eq!(decode(&typing.encode_to_vec()), None);
        assert_eq!(decode(b"\xff\xff\xff not protobuf"), None);
        assert_eq!(decode(&pb::Event::default().encode_to_vec()), None);
    }
}
