//! The outbox relay (DESIGN.md message path, steps 3-5): publishes committed outbox
//! rows to RabbitMQ with publisher confirms, routed by presence to the gateway
//! instances that hold the recipients, in seq order per conversation.
//!
//! One batch = one fetch of up to `batch_size` rows, one members query, one messages
//! query, one RouteUsers call, one broker message per destination (each gateway
//! instance holding a recipient, and the search index: an `EventBatch` of that
//! destination's events, see `beehive_common::event_batch`), one wait for all confirms
//! and one delete. The relay sleeps on LISTEN (a commit trigger notifies) with a fallback poll.
//!
//! Several replicas: the outbox is partitioned by hash(conversation_id), and a relay
//! works only on partitions whose session-level advisory lock it holds, on the very
//! connection that holds the locks. Row locks (`FOR UPDATE SKIP LOCKED`) were rejected:
//! two relays would each lock a different slice of one conversation and could publish
//! seq 7 before seq 6. With partition locks, one conversation has exactly one
//! publisher at a time; relays count each other (a shared advisory lock each) and
//! release partitions above their fair share between batches, so load spreads without
//! double publishing. A relay that dies loses its connection and with it its locks;
//! the others take its partitions at their next rebalance, and rows it published but
//! had not deleted are published again (clients drop duplicates by seq).
//!
//! Failures: broker or presence unreachable -> nothing is deleted, the batch is retried
//! with exponential backoff and no attempt is counted (an outage never dead-letters
//! anything). A row whose publish the broker refuses (nack) while others succeed is
//! retried `max_attempts` times with backoff, holding back later rows of its
//! conversation, then moved to `message.outbox_dead`. The message itself is stored
//! either way: recipients get it on `sync`; only the live push is lost.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use beehive_common::event_batch::{self, Batch, Batches, EVENT_BATCH_TYPE};
use beehive_common::events::{
    Names, SEARCH_INDEX_ROUTING_KEY, declare_topology, is_search_indexed,
};
use beehive_common::routing::{self, InstancesOf};
use beehive_common::{Error, Settings, Shutdown};
use beehive_proto::v1::Event;
use beehive_proto::v1::event::Payload;
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use sqlx::postgres::PgListener;
use sqlx::{ConnectOptions, PgConnection, PgPool};
use uuid::Uuid;

use crate::conversation::OUTBOX_PARTITIONS;
use crate::store::relay::{self as sql, OutboxRow};
use crate::store::{
    self, LocalWake, MemberRow, MessageRow, OUTBOX_CONVERSATION, OUTBOX_MESSAGE, OUTBOX_RECEIPT,
    OutboxSignal, Partitions, ReceiptRow,
};
use crate::view;
use beehive_common::grpc::ClientChannel;

/// Tuning of the relay. The defaults suit production; tests shorten the waits.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Rows per batch.
    pub batch_size: i64,
    /// Fallback poll when no notification arrives (a lost NOTIFY, a listener reconnect).
    pub poll_interval: Duration,
    /// How often partitions are rebalanced among relays.
    pub rebalance_interval: Duration,
    /// Refused publishes of one row before it is dead-lettered.
    pub max_attempts: i32,
    /// First retry delay of a refused row; doubles per attempt.
    pub retry_base: Duration,
    /// Longest retry delay of a refused row.
    pub retry_max: Duration,
    /// Longest backoff while the broker, presence or the database is unreachable.
    pub outage_backoff_max: Duration,
    /// How long to wait for broker confirms of one batch.
    pub confirm_timeout: Duration,
    /// Rows a relay deletes before it vacuums the outbox itself (see
    /// [`VACUUM_AFTER_DELETES`]).
    pub vacuum_after_deletes: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            rebalance_interval: Duration::from_secs(5),
            max_attempts: 5,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            outage_backoff_max: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(15),
            vacuum_after_deletes: VACUUM_AFTER_DELETES,
        }
    }
}

/// Why a relay session ended early.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// How a batch went.
enum BatchOutcome {
    /// No rows were ready.
    Empty,
    /// Some rows were handled; `full` when the batch was full (more may be waiting).
    Done { full: bool },
    /// The broker or presence could not be reached; nothing was consumed.
    Outage,
}

/// The relay task.
pub struct Relay {
    pool: PgPool,
    signal: Option<LocalWake>,
    /// This process's signal, to recognise its own notifications.
    origin: Option<OutboxSignal>,
    presence: PresenceServiceClient<ClientChannel>,
    publisher: Publisher,
    config: RelayConfig,
    shutdown: Shutdown,
    /// When the backlog gauges were last sampled.
    sampled_at: Option<std::time::Instant>,
    /// Rows this relay deleted since it last vacuumed the outbox.
    deleted_since_vacuum: usize,
}

/// Gauge: rows waiting in the outbox (sampled every [`SAMPLE_INTERVAL`]).
pub const OUTBOX_DEPTH: &str = "beehive_outbox_depth";
/// Histogram: from a row's commit to its publish confirmed by the broker.
pub const RELAY_LAG: &str = "beehive_outbox_relay_lag_seconds";
/// Rows a relay deletes before it vacuums the outbox itself. Every outbox row is
/// inserted once and deleted once; each relay fetch walks the partition's index from
/// its oldest entry, dead ones included, until a vacuum removes them, and
/// autovacuum's naptime (a minute by default, off on some servers) lets hundreds of
/// thousands pile up at a few thousand messages a second. A vacuum of the small live
/// table takes milliseconds and blocks neither sends nor other relays.
pub const VACUUM_AFTER_DELETES: usize = 20_000;
/// How often the relay samples the outbox depth and the search queue depth.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

impl Relay {
    /// A relay over `pool`, routing through `presence` and publishing to the broker of
    /// `settings`.
    pub fn new(
        pool: PgPool,
        settings: &Settings,
        presence: PresenceServiceClient<ClientChannel>,
        config: RelayConfig,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            pool,
            signal: None,
            origin: None,
            presence,
            publisher: Publisher::new(settings),
            config,
            shutdown,
            sampled_at: None,
            deleted_since_vacuum: 0,
        }
    }

    /// Also wakes on `signal`, raised by this process's own sends: the relay then
    /// starts without waiting for the NOTIFY round trip (and only when a send touched
    /// one of its partitions), and it tells the signal whether relays run elsewhere.
    pub fn with_local_signal(mut self, signal: &OutboxSignal) -> Self {
        self.signal = Some(signal.subscribe());
        self.origin = Some(signal.clone());
        self
    }

    /// Runs until shutdown, starting a new session after any database failure.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        while !self.shutdown.is_triggered() {
            match self.session().await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "outbox relay session failed; restarting");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.shutdown.wait_owned() => break,
                    }
                    backoff = (backoff * 2).min(self.config.outage_backoff_max);
                }
            }
        }
        self.publisher.close().await;
        tracing::info!("outbox relay stopped");
    }

    /// One database session: its own connection (holding the locks) and a listener.
    async fn session(&mut self) -> Result<(), RelayError> {
        let options = self
            .pool
            .connect_options()
            .as_ref()
            .clone()
            .application_name("beehive-message-relay");
        let mut conn = options.connect().await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(store::OUTBOX_CHANNEL).await?;
        sql::join(&mut conn).await?;
        // Counted among this process's relays while the session (and its lock) lasts.
        let _joined = self.signal.as_ref().map(LocalWake::joined);
        let mut owned: BTreeSet<i16> = BTreeSet::new();
        let mut next_rebalance = tokio::time::Instant::now();
        let mut outage_backoff = Duration::from_millis(100);
        tracing::info!("outbox relay session started");
        loop {
            if self.shutdown.is_triggered() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= next_rebalance {
                let (hungry, relays) = rebalance(&mut conn, &mut owned).await?;
                if let Some(signal) = &self.signal {
                    signal.counted_relays(relays);
                }
                // Below its share, a relay looks again soon: partitions another relay
                // just released must not sit unowned for a whole interval.
                let wait = if hungry {
                    self.config.rebalance_interval / 10
                } else {
                    self.config.rebalance_interval
                };
                next_rebalance = tokio::time::Instant::now() + wait;
            }
            let outcome = if owned.is_empty() {
                BatchOutcome::Empty
            } else {
                let partitions: Vec<i16> = owned.iter().copied().collect();
                self.batch(&mut conn, &partitions).await?
            };
            let wait = match outcome {
                BatchOutcome::Done { full: true } => {
                    outage_backoff = Duration::from_millis(100);
                    continue;
                }
                BatchOutcome::Done { full: false } | BatchOutcome::Empty => {
                    outage_backoff = Duration::from_millis(100);
                    self.config.poll_interval
                }
                BatchOutcome::Outage => {
                    let wait = outage_backoff;
                    outage_backoff = (outage_backoff * 2).min(self.config.outage_backoff_max);
                    // During an outage only the backoff paces retries: notifications
                    // must not turn into a tight retry loop.
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.shutdown.wait_owned() => return Ok(()),
                    }
                    continue;
                }
            };
            let wait = wait.min(
                next_rebalance.saturating_duration_since(tokio::time::Instant::now())
                    + Duration::from_millis(1),
            );
            let owned_set: Partitions = owned.iter().copied().collect();
            if !self.wait_for_work(&mut listener, owned_set, wait).await {
                return Ok(());
            }
        }
    }

    /// Sleeps until a commit of this process wrote rows into one of `owned`, another
    /// process's commit was notified, or `wait` passed. Notifications this process
    /// sent itself are skipped: its signal already woke the relay owning that commit's
    /// partition, and a second fetch would find nothing (at low rates that was one
    /// empty fetch per send). Returns `false` on shutdown.
    async fn wait_for_work(
        &mut self,
        listener: &mut PgListener,
        owned: Partitions,
        wait: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let origin = &self.origin;
        let is_own = |payload: &str| origin.as_ref().is_some_and(|s| s.is_own(payload));
        loop {
            let local = &mut self.signal;
            let raised = async {
                match local.as_mut() {
                    Some(signal) => signal.raised(owned).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = raised => return true,
                notified = listener.recv() => {
                    let mut foreign = match notified {
                        Ok(notification) => !is_own(notification.payload()),
                        Err(error) => {
                            // The listener reconnects by itself on the next recv; the
                            // poll covers anything committed meanwhile.
                            tracing::warn!(%error, "outbox listener failed");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            true
                        }
                    };
                    // Many commits, one batch: take what queued up meanwhile.
                    while let Some(notification) = listener.next_buffered() {
                        foreign |= !is_own(notification.payload());
                    }
                    if foreign {
                        return true;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return true,
                () = self.shutdown.wait_owned() => return false,
            }
        }
    }

    /// Relays one batch of the owned partitions.
    async fn batch(
        &mut self,
        conn: &mut PgConnection,
        partitions: &[i16],
    ) -> Result<BatchOutcome, RelayError> {
        self.sample_backlog(conn).await;
        let (rows, full) = sql::fetch(conn, partitions, self.config.batch_size).await?;
        if rows.is_empty() {
            return Ok(BatchOutcome::Empty);
        }
        let context = BatchContext::load(conn, &rows).await?;
        let plan = plan_events(&rows, &context);

        let routes = match self.route(&plan.events).await {
            Ok(routes) => routes,
            Err(error) => {
                tracing::warn!(%error, rows = rows.len(), "cannot route outbox rows; will retry");
                return Ok(BatchOutcome::Outage);
            }
        };
        let batches = encode_batches(&plan.events, &routes);
        let confirmed = match self
            .publisher
            .publish(&batches, self.config.confirm_timeout)
            .await
        {
            Ok(confirmed) => confirmed,
            Err(error) => {
                tracing::warn!(%error, rows = rows.len(), "cannot publish outbox rows; will retry");
                return Ok(BatchOutcome::Outage);
            }
        };
        // An event is refused when any broker message carrying it was refused.
        let mut refused: HashSet<usize> = HashSet::new();
        for (batch, acked) in batches.iter().zip(&confirmed) {
            if !acked {
                refused.extend(batch.items.iter().copied());
            }
        }
        let mut done: Vec<i64> = plan.skipped;
        let mut retry: Vec<i64> = Vec::new();
        let mut bury: Vec<i64> = Vec::new();
        for (index, (row_ids, _)) in plan.events.iter().enumerate() {
            if !refused.contains(&index) {
                done.extend(row_ids);
                continue;
            }
            for id in row_ids {
                let attempts = rows.iter().find(|r| r.id == *id).map_or(0, |r| r.attempts);
                if attempts + 1 >= self.config.max_attempts {
                    bury.push(*id);
                } else {
                    retry.push(*id);
                }
            }
        }
        sql::delete(conn, &done).await?;
        self.deleted_since_vacuum += done.len();
        if self.deleted_since_vacuum >= self.config.vacuum_after_deletes {
            self.deleted_since_vacuum = 0;
            // A failed vacuum only leaves the dead rows for autovacuum.
            if let Err(error) = sql::vacuum(conn).await {
                tracing::debug!(%error, "cannot vacuum the outbox");
            }
        }
        let now = chrono::Utc::now();
        for row in rows.iter().filter(|r| done.contains(&r.id)) {
            let lag = (now - row.created_at).to_std().unwrap_or_default();
            metrics::histogram!(RELAY_LAG).record(lag.as_secs_f64());
        }
        if !retry.is_empty() {
            tracing::warn!(
                rows = retry.len(),
                "broker refused outbox rows; retrying later"
            );
            sql::hold(
                conn,
                &retry,
                "the broker refused the publish",
                self.config.retry_base.as_secs_f64() * 1000.0,
                self.config.retry_max.as_secs_f64() * 1000.0,
            )
            .await?;
        }
        if !bury.is_empty() {
            tracing::error!(
                rows = bury.len(),
                "outbox rows kept failing; moved to message.outbox_dead"
            );
            sql::bury(conn, &bury, "the broker refused the publish too often").await?;
            metrics::counter!("beehive_outbox_dead_total").increment(bury.len() as u64);
        }
        metrics::counter!("beehive_outbox_relayed_total").increment(done.len() as u64);
        metrics::counter!("beehive_outbox_published_total").increment(batches.len() as u64);
        metrics::counter!("beehive_outbox_events_published_total")
            .increment(batches.iter().map(|b| b.events as u64).sum());
        Ok(BatchOutcome::Done { full })
    }

    /// Samples the backlog gauges, at most every [`SAMPLE_INTERVAL`]: the outbox depth
    /// and the search index queue's depth. Failures only skip a sample.
    async fn sample_backlog(&mut self, conn: &mut PgConnection) {
        if self
            .sampled_at
            .is_some_and(|at| at.elapsed() < SAMPLE_INTERVAL)
        {
            return;
        }
        self.sampled_at = Some(std::time::Instant::now());
        match sql::depth(conn).await {
            Ok(depth) => metrics::gauge!(OUTBOX_DEPTH).set(depth as f64),
            Err(error) => tracing::debug!(%error, "cannot count the outbox"),
        }
        let queue = self.publisher.names.search_index_queue.clone();
        match self.publisher.queue_depth(&queue).await {
            Ok(messages) => {
                metrics::gauge!(beehive_common::events::QUEUE_MESSAGES, "queue" => "search_index")
                    .set(f64::from(messages));
            }
            // No search component (yet): its queue does not exist.
            Err(error) => tracing::debug!(%error, %queue, "cannot read the queue depth"),
        }
    }

    /// Which gateway instances hold each recipient: one RouteUsers call per batch.
    async fn route(&self, events: &[(Vec<i64>, Event)]) -> Result<InstancesOf, Error> {
        routing::route_users(
            &self.presence,
            events
                .iter()
                .flat_map(|(_, e)| e.recipient_ids.iter().cloned())
                .collect(),
        )
        .await
    }
}

/// Gives partitions above the fair share back and takes free ones up to it. Returns
/// whether this relay still holds fewer than its share, and how many relays run.
async fn rebalance(
    conn: &mut PgConnection,
    owned: &mut BTreeSet<i16>,
) -> Result<(bool, i64), sqlx::Error> {
    let relays = sql::live_relays(conn).await?.max(1);
    let total = i64::from(OUTBOX_PARTITIONS);
    let share = usize::try_from((total + relays - 1) / relays).unwrap_or(1);
    while owned.len() > share {
        let Some(partition) = owned.pop_last() else {
            break;
        };
        sql::unlock_partition(conn, partition).await?;
        tracing::info!(
            partition,
            relays,
            "outbox partition released to another relay"
        );
    }
    if owned.len() < share {
        for partition in 0..OUTBOX_PARTITIONS as i16 {
            if owned.len() >= share {
                break;
            }
            if !owned.contains(&partition) && sql::try_lock_partition(conn, partition).await? {
                owned.insert(partition);
                tracing::debug!(partition, relays, "outbox partition taken");
            }
        }
    }
    metrics::gauge!("beehive_outbox_partitions_owned").set(owned.len() as f64);
    Ok((owned.len() < share, relays))
}

/// What a batch's events are built from, loaded in three queries.
struct BatchContext {
    members: HashMap<Uuid, Vec<MemberRow>>,
    messages: HashMap<(Uuid, i64), MessageRow>,
    conversations: HashMap<Uuid, store::ConversationRow>,
}

impl BatchContext {
    async fn load(conn: &mut PgConnection, rows: &[OutboxRow]) -> Result<Self, sqlx::Error> {
        let mut conversation_ids: Vec<Uuid> = rows.iter().map(|r| r.conversation_id).collect();
        conversation_ids.sort_unstable();
        conversation_ids.dedup();
        let mut members: HashMap<Uuid, Vec<MemberRow>> = HashMap::new();
        for member in sql::members_of(conn, &conversation_ids).await? {
            members
                .entry(member.conversation_id)
                .or_default()
                .push(member);
        }
        let (ids, seqs): (Vec<Uuid>, Vec<i64>) = rows
            .iter()
            .filter(|r| r.kind == OUTBOX_MESSAGE)
            .filter_map(|r| r.seq.map(|s| (r.conversation_id, s)))
            .unzip();
        let messages = if ids.is_empty() {
            HashMap::new()
        } else {
            store::messages_at(&mut *conn, &ids, &seqs)
                .await?
                .into_iter()
                .map(|m| ((m.conversation_id, m.seq), m))
                .collect()
        };
        let mut updated: Vec<Uuid> = rows
            .iter()
            .filter(|r| r.kind == OUTBOX_CONVERSATION)
            .map(|r| r.conversation_id)
            .collect();
        updated.sort_unstable();
        updated.dedup();
        let conversations = if updated.is_empty() {
            HashMap::new()
        } else {
            sql::conversations(conn, &updated)
                .await?
                .into_iter()
                .map(|c| (c.id, c))
                .collect()
        };
        Ok(Self {
            members,
            messages,
            conversations,
        })
    }
}

/// The events of a batch: each with the outbox rows it settles, plus rows that need
/// no publish (superseded, or nobody left to tell).
struct EventPlan {
    events: Vec<(Vec<i64>, Event)>,
    skipped: Vec<i64>,
}

/// Builds the events of a batch from current state. Receipts of one member and
/// updates of one conversation within a batch collapse into one event carrying the
/// latest state, so a burst of `read` frames costs one publish.
fn plan_events(rows: &[OutboxRow], context: &BatchContext) -> EventPlan {
    let mut plan = EventPlan {
        events: Vec::with_capacity(rows.len()),
        skipped: Vec::new(),
    };
    // The last row of each collapsible key within the batch.
    let mut last_of_key: HashMap<(i16, Uuid, Option<Uuid>), i64> = HashMap::new();
    for row in rows {
        if row.kind == OUTBOX_RECEIPT || row.kind == OUTBOX_CONVERSATION {
            let user = (row.kind == OUTBOX_RECEIPT)
                .then_some(row.user_id)
                .flatten();
            last_of_key.insert((row.kind, row.conversation_id, user), row.id);
        }
    }
    let mut extra_of: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for row in rows.iter().filter(|r| r.kind == OUTBOX_CONVERSATION) {
        extra_of
            .entry(row.conversation_id)
            .or_default()
            .extend(row.extra_recipients.iter().flatten());
    }
    let mut settled_with: HashMap<i64, Vec<i64>> = HashMap::new();
    for row in rows {
        let empty = Vec::new();
        let members = context.members.get(&row.conversation_id).unwrap_or(&empty);
        let event = match row.kind {
            OUTBOX_MESSAGE => message_event(row, members, context),
            OUTBOX_RECEIPT | OUTBOX_CONVERSATION => {
                let user = (row.kind == OUTBOX_RECEIPT)
                    .then_some(row.user_id)
                    .flatten();
                let last = last_of_key
                    .get(&(row.kind, row.conversation_id, user))
                    .copied()
                    .unwrap_or(row.id);
                if last != row.id {
                    // A later row of the batch carries the newer state.
                    settled_with.entry(last).or_default().push(row.id);
                    continue;
                }
                if row.kind == OUTBOX_RECEIPT {
                    receipt_event(row, members)
                } else {
                    conversation_event(
                        row,
                        members,
                        extra_of.get(&row.conversation_id).map_or(&[][..], |e| e),
                        context,
                    )
                }
            }
            _ => None,
        };
        match event {
            Some(event) => plan.events.push((vec![row.id], event)),
            None => plan.skipped.push(row.id),
        }
    }
    for (ids, _) in &mut plan.events {
        if let Some(extra) = settled_with.remove(&ids[0]) {
            ids.extend(extra);
        }
    }
    // Rows superseded by a row that itself had nothing to publish.
    plan.skipped.extend(settled_with.into_values().flatten());
    plan
}

/// A message goes to every member that joined before it, the sender included (its
/// other devices show it), except the sending device, which got the ack.
fn message_event(row: &OutboxRow, members: &[MemberRow], context: &BatchContext) -> Option<Event> {
    let seq = row.seq?;
    let message = context.messages.get(&(row.conversation_id, seq))?;
    let recipient_ids: Vec<String> = members
        .iter()
        .filter(|m| m.join_seq < seq)
        .map(|m| m.user_id.to_string())
        .collect();
    if recipient_ids.is_empty() {
        return None;
    }
    let device = row.device_id.clone().unwrap_or_default();
    Some(Event {
        recipient_ids,
        exclude_device_user_id: if device.is_empty() {
            String::new()
        } else {
            message.sender_id.to_string()
        },
        exclude_device_id: device,
        payload: Some(Payload::Message(view::message(message))),
    })
}

/// A receipt goes to the other members, with the member's current progress.
fn receipt_event(row: &OutboxRow, members: &[MemberRow]) -> Option<Event> {
    let user = row.user_id?;
    let member = members.iter().find(|m| m.user_id == user)?;
    let recipient_ids: Vec<String> = members
        .iter()
        .filter(|m| m.user_id != user)
        .map(|m| m.user_id.to_string())
        .collect();
    if recipient_ids.is_empty() {
        return None;
    }
    let receipt = ReceiptRow {
        conversation_id: row.conversation_id,
        user_id: user,
        delivered_seq: member.delivered_seq,
        read_seq: member.read_seq,
    };
    Some(Event {
        recipient_ids,
        exclude_device_user_id: String::new(),
        exclude_device_id: String::new(),
        payload: Some(Payload::Receipt(view::receipt(&receipt))),
    })
}

/// A conversation update goes to every current member and to the members it removed.
fn conversation_event(
    row: &OutboxRow,
    members: &[MemberRow],
    extra: &[Uuid],
    context: &BatchContext,
) -> Option<Event> {
    let conversation = context.conversations.get(&row.conversation_id)?;
    let member_ids: Vec<Uuid> = members.iter().map(|m| m.user_id).collect();
    let mut recipients = member_ids.clone();
    for user in extra {
        if !recipients.contains(user) {
            recipients.push(*user);
        }
    }
    if recipients.is_empty() {
        return None;
    }
    Some(Event {
        recipient_ids: recipients.iter().map(Uuid::to_string).collect(),
        exclude_device_user_id: String::new(),
        exclude_device_id: String::new(),
        payload: Some(Payload::ConversationUpdated(view::shared_conversation(
            conversation,
            &member_ids,
        ))),
    })
}

/// The broker messages of a batch's events: per gateway instance holding any
/// recipient, one [`EventBatch`](beehive_proto::v1::EventBatch) of the events for it
/// (narrowed to its recipients), plus one for the search index with every message
/// event (whoever is online). Each payload is encoded once.
fn encode_batches(events: &[(Vec<i64>, Event)], routes: &InstancesOf) -> Vec<Batch> {
    let mut batches = Batches::default();
    let mut payload = Vec::new();
    let mut envelope = Vec::new();
    let mut per_instance: Vec<(&str, Vec<&String>)> = Vec::new();
    for (index, (_, event)) in events.iter().enumerate() {
        payload.clear();
        event_batch::encode_payload(event, &mut payload);
        per_instance.clear();
        for user in &event.recipient_ids {
            for instance in routes.get(user.as_str()).into_iter().flatten() {
                match per_instance
                    .iter_mut()
                    .find(|(i, _)| *i == instance.as_str())
                {
                    Some((_, users)) => users.push(user),
                    None => per_instance.push((instance.as_str(), vec![user])),
                }
            }
        }
        for (instance, users) in &per_instance {
            envelope.clear();
            event_batch::encode_envelope(event, users, &mut envelope);
            batches.push(instance, index, &[&envelope, &payload]);
        }
        if is_search_indexed(event) {
            batches.push(SEARCH_INDEX_ROUTING_KEY, index, &[&payload]);
        }
    }
    batches.finish()
}

/// Why the broker could not take a batch.
#[derive(Debug, thiserror::Error)]
enum BrokerError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("channel failed: {0}")]
    Channel(#[from] lapin::Error),
    #[error("no confirms within {0:?}")]
    Timeout(Duration),
}

/// A confirm-mode channel to the broker, reopened after any failure.
struct Publisher {
    settings: Settings,
    names: Names,
    open: Option<(lapin::Connection, lapin::Channel)>,
}

impl Publisher {
    fn new(settings: &Settings) -> Self {
        Self {
            settings: settings.clone(),
            names: Names::new(settings),
            open: None,
        }
    }

    async fn channel(&mut self) -> Result<&lapin::Channel, BrokerError> {
        let healthy = self
            .open
            .as_ref()
            .is_some_and(|(conn, ch)| conn.status().connected() && ch.status().connected());
        if !healthy {
            self.open = None;
            let connection = beehive_common::infra::connect_amqp(&self.settings.amqp_url)
                .await
                .map_err(|e| BrokerError::Connect(e.to_string()))?;
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            declare_topology(&channel, &self.names).await?;
            tracing::info!("outbox relay connected to the broker");
            self.open = Some((connection, channel));
        }
        match &self.open {
            Some((_, channel)) => Ok(channel),
            None => Err(BrokerError::Connect("no channel".to_owned())),
        }
    }

    /// Publishes every batch as a persistent message, then waits for all confirms at
    /// once. `Ok` holds one flag per batch: acked or refused (nack). `Err` means the
    /// connection failed: treat every batch as unpublished.
    async fn publish(
        &mut self,
        batches: &[Batch],
        timeout: Duration,
    ) -> Result<Vec<bool>, BrokerError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.publish_inner(batches, timeout).await;
        if result.is_err() {
            self.open = None;
        }
        result
    }

    async fn publish_inner(
        &mut self,
        batches: &[Batch],
        timeout: Duration,
    ) -> Result<Vec<bool>, BrokerError> {
        let exchange = ShortString::from(self.names.exchange.clone());
        let channel = self.channel().await?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/x-protobuf".to_owned()))
            .with_type(ShortString::from(EVENT_BATCH_TYPE.to_owned()));
        let mut confirms = Vec::with_capacity(batches.len());
        let started = std::time::Instant::now();
        for batch in batches {
            confirms.push(
                channel
                    .basic_publish(
                        exchange.clone(),
                        ShortString::from(batch.routing_key.clone()),
                        BasicPublishOptions::default(),
                        &batch.bytes,
                        properties.clone(),
                    )
                    .await?,
            );
        }
        metrics::histogram!(beehive_common::events::PUBLISH_DURATION)
            .record(started.elapsed().as_secs_f64());
        let started = std::time::Instant::now();
        let all = futures::future::join_all(confirms);
        let results = tokio::time::timeout(timeout, all)
            .await
            .map_err(|_| BrokerError::Timeout(timeout))?;
        metrics::histogram!(beehive_common::events::CONFIRM_DURATION)
            .record(started.elapsed().as_secs_f64());
        let mut acked = Vec::with_capacity(results.len());
        for result in results {
            acked.push(result?.is_ack());
        }
        Ok(acked)
    }

    /// Messages ready in `queue`, asked on a channel of its own: a passive declare of a
    /// missing queue closes the channel it is made on.
    async fn queue_depth(&mut self, queue: &str) -> Result<u32, BrokerError> {
        self.channel().await?;
        let Some((connection, _)) = &self.open else {
            return Err(BrokerError::Connect("no connection".to_owned()));
        };
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                ShortString::from(queue.to_owned()),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..lapin::options::QueueDeclareOptions::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await;
        if channel.status().connected() {
            let _ = channel
                .close(200, ShortString::from("done".to_owned()))
                .await;
        }
        Ok(declared?.message_count())
    }

    async fn close(&mut self) {
        if let Some((connection, _)) = self.open.take() {
            let _ = connection
                .close(200, ShortString::from("shutdown".to_owned()))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(conversation: Uuid, user: Uuid, join: i64) -> MemberRow {
        MemberRow {
            conversation_id: conversation,
            user_id: user,
            join_seq: join,
            delivered_seq: join + 1,
            read_seq: join,
        }
    }

    fn row(id: i64, kind: i16, conversation: Uuid) -> OutboxRow {
        OutboxRow {
            id,
            partition: 0,
            conversation_id: conversation,
            kind,
            seq: None,
            user_id: None,
            device_id: None,
            extra_recipients: None,
            attempts: 0,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn events_reach_the_right_members_and_collapse_within_a_batch() {
        let conversation = Uuid::now_v7();
        let (a, b, late) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let message = MessageRow {
            conversation_id: conversation,
            seq: 3,
            id: Uuid::now_v7(),
            sender_id: a,
            client_msg_id: "c".into(),
            msg_type: 1,
            content: "hi".into(),
            file_id: None,
            created_at: chrono::Utc::now(),
        };
        let context = BatchContext {
            members: HashMap::from([(
                conversation,
                vec![
                    member(conversation, a, 0),
                    member(conversation, b, 0),
                    member(conversation, late, 3),
                ],
            )]),
            messages: HashMap::from([((conversation, 3), message)]),
            conversations: HashMap::new(),
        };
        let mut send = row(1, OUTBOX_MESSAGE, conversation);
        send.seq = Some(3);
        send.device_id = Some("phone".into());
        let mut read1 = row(2, OUTBOX_RECEIPT, conversation);
        read1.user_id = Some(b);
        let mut read2 = row(3, OUTBOX_RECEIPT, conversation);
        read2.user_id = Some(b);
        let mut gone = row(4, OUTBOX_RECEIPT, conversation);
        gone.user_id = Some(Uuid::now_v7());
        let plan = plan_events(&[send, read1, read2, gone], &context);

        assert_eq!(plan.events.len(), 2);
        let (ids, event) = &plan.events[0];
        assert_eq!(ids, &vec![1]);
        // The member who joined at seq 3 does not get message 3.
        assert_eq!(event.recipient_ids, vec![a.to_string(), b.to_string()]);
        assert_eq!(event.exclude_device_user_id, a.to_string());
        assert_eq!(event.exclude_device_id, "phone");
        let (ids, event) = &plan.events[1];
        assert_eq!(ids, &vec![3, 2], "the older receipt settles with the newer");
        assert_eq!(event.recipient_ids, vec![a.to_string(), late.to_string()]);
        // A receipt of someone who left is not published, only deleted.
        assert_eq!(plan.skipped, vec![4]);
    }

    #[test]
    fn one_broker_message_per_destination_carries_its_events_in_order() {
        use beehive_common::event_batch::decode_events;
        let conversation = Uuid::now_v7();
        let event = |seq: u64, recipients: &[&str]| Event {
            recipient_ids: recipients.iter().map(|r| (*r).to_owned()).collect(),
            exclude_device_user_id: "alice".into(),
            exclude_device_id: "phone".into(),
            payload: Some(Payload::Message(beehive_proto::v1::Message {
                id: format!("m{seq}"),
                conversation_id: conversation.to_string(),
                seq,
                ..beehive_proto::v1::Message::default()
            })),
        };
        let receipt = Event {
            recipient_ids: vec!["alice".into()],
            payload: Some(Payload::Receipt(beehive_proto::v1::Receipt::default())),
            ..Event::default()
        };
        let events = vec![
            (vec![1], event(1, &["alice", "bob"])),
            (vec![2], receipt),
            (vec![3], event(2, &["alice", "bob", "offline"])),
        ];
        let routes: InstancesOf = HashMap::from([
            ("alice".to_owned(), vec!["gw-a".to_owned()]),
            ("bob".to_owned(), vec!["gw-a".to_owned(), "gw-b".to_owned()]),
        ]);
        let batches = encode_batches(&events, &routes);
        let mut keys: Vec<&str> = batches.iter().map(|b| b.routing_key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![SEARCH_INDEX_ROUTING_KEY, "gw-a", "gw-b"]);
        let of = |key: &str| {
            let batch = batches.iter().find(|b| b.routing_key == key).unwrap();
            let events = decode_events(Some(EVENT_BATCH_TYPE), &batch.bytes, 1 << 20).unwrap();
            (batch.items.clone(), events)
        };
        let (items, on_a) = of("gw-a");
        assert_eq!(items, vec![0, 1, 2]);
        assert_eq!(on_a.len(), 3);
        assert_eq!(on_a[0].recipient_ids, vec!["alice", "bob"]);
        assert_eq!(on_a[0].exclude_device_id, "phone");
        assert_eq!(on_a[2], {
            let mut e = events[2].1.clone();
            e.recipient_ids = vec!["alice".into(), "bob".into()];
            e
        });
        let (items, on_b) = of("gw-b");
        assert_eq!(
            items,
            vec![0, 2],
            "gw-b holds only bob, who gets no receipt here"
        );
        assert!(on_b.iter().all(|e| e.recipient_ids == vec!["bob"]));
        let (items, indexed) = of(SEARCH_INDEX_ROUTING_KEY);
        assert_eq!(items, vec![0, 2], "only message events are indexed");
        assert!(indexed.iter().all(|e| e.recipient_ids.is_empty()
            && e.exclude_device_id.is_empty()
            && e.payload.is_some()));
    }
}
