//! Every SQL statement of the message service, nothing else: absence and refusals come
//! back as typed results (`Option`, [`SendOutcome`], counts) and [`crate::service`]
//! decides what the API says about them; transactions spanning several statements are
//! opened by the service ([`Store::begin`]) and run through the `tx_*` functions.
//!
//! Hot-path statements are single round trips: a send is one statement (membership
//! check, seq allocation, insert, the sender's read_seq and the outbox row, all in one
//! implicit transaction), and so is a receipt. Lock order is always conversation row
//! before member rows, so concurrent sends, joins and leaves cannot deadlock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::conversation::{
    HistoryWindow, NewMessage, SyncMembership, SyncWindow, outbox_partition, to_i64, to_u64,
};

/// `message.conversations.kind` of a direct conversation.
pub const KIND_DIRECT: i16 = 1;
/// `message.conversations.kind` of a group.
pub const KIND_GROUP: i16 = 2;

/// `message.outbox.kind`: a stored message, by seq.
pub const OUTBOX_MESSAGE: i16 = 1;
/// `message.outbox.kind`: a member's receipt, by user.
pub const OUTBOX_RECEIPT: i16 = 2;
/// `message.outbox.kind`: a conversation's metadata or membership changed.
pub const OUTBOX_CONVERSATION: i16 = 3;

/// The channel the outbox trigger notifies on commit.
pub const OUTBOX_CHANNEL: &str = "beehive_message_outbox";

const UNIQUE_VIOLATION: &str = "23505";

/// A statement built once from a template that names the kind constants above, so the
/// SQL and the Rust code cannot disagree on what `1` means. Literals rather than bind
/// parameters: the partial unique index on direct pairs (`WHERE kind = 1`) is only
/// usable by `ON CONFLICT` and the planner when the query carries the literal.
/// `&'static str` from a `static` satisfies sqlx's injection guard; the text comes from
/// constants only.
macro_rules! statement {
    ($name:ident, $($template:tt)+) => {
        static $name: LazyLock<String> = LazyLock::new(|| format!($($template)+));
    };
}

/// A conversation row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ConversationRow {
    pub id: Uuid,
    pub kind: i16,
    pub name: String,
    pub avatar: String,
    pub owner_id: Option<Uuid>,
    pub last_seq: i64,
    pub updated_at: DateTime<Utc>,
    pub sort_at: DateTime<Utc>,
}

/// A conversation with the state of one member in it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MemberConversationRow {
    #[sqlx(flatten)]
    pub conversation: ConversationRow,
    pub join_seq: i64,
    pub read_seq: i64,
}

/// A conversation as one member sees it, with everything the API shows.
#[derive(Clone, Debug)]
pub struct ConversationView {
    pub row: MemberConversationRow,
    pub member_ids: Vec<Uuid>,
    /// The newest message, when the member may see it.
    pub last_message: Option<MessageRow>,
}

/// A message row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct MessageRow {
    pub conversation_id: Uuid,
    pub seq: i64,
    pub id: Uuid,
    pub sender_id: Uuid,
    pub client_msg_id: String,
    pub msg_type: i16,
    pub content: String,
    pub file_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// A row of [`Store::send_batch`]: the 1-based input position and the stored message.
#[derive(sqlx::FromRow)]
struct BatchRow {
    n: i64,
    #[sqlx(flatten)]
    message: MessageRow,
}

/// One member's progress in a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ReceiptRow {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub delivered_seq: i64,
    pub read_seq: i64,
}

/// A member row as the relay needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct MemberRow {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub join_seq: i64,
    pub delivered_seq: i64,
    pub read_seq: i64,
}

/// What a send did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored now, with its outbox row.
    Stored(MessageRow),
    /// `(sender, client_msg_id)` was stored before; nothing new was written.
    Duplicate(MessageRow),
    /// Nothing was written: the sender is not a member of the conversation (or the
    /// conversation does not exist; [`Store::conversation_exists`] tells which).
    NotMember,
}

/// A conversation row locked for a membership change, as the service's checks need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LockedConversation {
    pub kind: i16,
    pub last_seq: i64,
    pub member_count: i32,
    pub owner_id: Option<Uuid>,
}

/// The place in the conversation list after which a page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListAfter {
    pub sort_at: DateTime<Utc>,
    pub id: Uuid,
}

/// A transaction the service opened with [`Store::begin`].
pub type Tx = Transaction<'static, Postgres>;

/// Which progress marker a mark call moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Delivered,
    Read,
}

const MESSAGE_COLUMNS: &str =
    "conversation_id, seq, id, sender_id, client_msg_id, msg_type, content, file_id, created_at";

/// Wakes the outbox relays after commits that wrote outbox rows.
///
/// A NOTIFY inside each sending transaction would serialize all of them on
/// PostgreSQL's notification lock (held across the commit's WAL flush). Instead sends
/// raise this signal after commit: the relays of this process wake directly (only
/// those owning a partition that got rows), and one background task per process
/// issues the NOTIFY for relays in other processes, at most one in flight, so any
/// number of commits during one round trip cost one notification. When no relay runs
/// in another process (the relays of this one count them at each rebalance) there is
/// nobody to notify and the NOTIFY is skipped.
#[derive(Clone, Default)]
pub struct OutboxSignal {
    inner: Arc<SignalInner>,
}

/// A set of outbox partitions, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Partitions(u64);

const _: () = assert!(crate::conversation::OUTBOX_PARTITIONS <= 64);

impl Partitions {
    /// Every partition.
    pub const ALL: Self = Self(u64::MAX);

    /// The partition of `conversation_id`.
    pub fn of(conversation_id: Uuid) -> Self {
        Self::from_iter([outbox_partition(conversation_id)])
    }

    /// Whether no partition is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<i16> for Partitions {
    fn from_iter<I: IntoIterator<Item = i16>>(partitions: I) -> Self {
        Self(
            partitions
                .into_iter()
                .filter(|p| (0..64).contains(p))
                .fold(0, |mask, p| mask | 1 << p),
        )
    }
}

#[derive(Default)]
struct SignalInner {
    /// Payload of this process's NOTIFYs, so its own relays, already woken directly,
    /// can ignore them instead of fetching a second time for one commit.
    origin: OutboxOrigin,
    pending: AtomicBool,
    wake: tokio::sync::Notify,
    /// Partitions that got rows since a relay of this process last took them.
    dirty: AtomicU64,
    /// Bumped on every raise; each relay of this process holds a receiver.
    raised: WatchCell,
    /// Per relay of this process that has counted the live relays: whether it saw
    /// one in another process. None counted yet: unknown, which counts as yes.
    counted: std::sync::Mutex<HashMap<u64, bool>>,
    /// Relays of this process holding their database session (counted there).
    joined: AtomicUsize,
}

impl SignalInner {
    fn counted(&self) -> std::sync::MutexGuard<'_, HashMap<u64, bool>> {
        // Plain data that stays consistent even if a holder panicked.
        self.counted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sender of the raise counter (a `watch` channel wakes every receiver, and one
/// that was busy sees the change when it next waits: no wake-up is lost).
struct WatchCell(tokio::sync::watch::Sender<u64>);

impl Default for WatchCell {
    fn default() -> Self {
        Self(tokio::sync::watch::Sender::new(0))
    }
}

/// One relay's subscription to its process's commits.
pub struct LocalWake {
    signal: OutboxSignal,
    raised: tokio::sync::watch::Receiver<u64>,
    /// Identifies the relay in the process's count of relays elsewhere.
    relay: u64,
}

impl LocalWake {
    /// Completes once a commit of this process wrote rows into one of `owned`, and
    /// takes those partitions' marks (at once if that happened since the last call).
    pub async fn raised(&mut self, owned: Partitions) {
        loop {
            let taken = self
                .signal
                .inner
                .dirty
                .fetch_and(!owned.0, Ordering::AcqRel);
            if taken & owned.0 != 0 {
                return;
            }
            if self.raised.changed().await.is_err() {
                // The signal lives as long as this receiver's `signal`: unreachable.
                return std::future::pending().await;
            }
        }
    }

    /// Marks this relay's database session as joined (counted among the live relays)
    /// until the guard drops.
    pub fn joined(&self) -> JoinedSession {
        self.signal.inner.joined.fetch_add(1, Ordering::AcqRel);
        JoinedSession(self.signal.clone())
    }

    /// Records how many relays run against the database (this one included, from its
    /// last rebalance): the NOTIFYs are skipped while all of them are this process's.
    pub fn counted_relays(&self, total: i64) {
        let local = self.signal.inner.joined.load(Ordering::Acquire);
        let elsewhere = total > i64::try_from(local).unwrap_or(i64::MAX);
        self.signal.inner.counted().insert(self.relay, elsewhere);
    }
}

/// A relay's joined database session; see [`LocalWake::joined`].
pub struct JoinedSession(OutboxSignal);

impl Drop for JoinedSession {
    fn drop(&mut self) {
        self.0.inner.joined.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for LocalWake {
    fn drop(&mut self) {
        // With no relay left counting, nobody here knows: notify again.
        self.signal.inner.counted().remove(&self.relay);
    }
}

impl OutboxSignal {
    /// Marks that outbox rows of `partitions` were committed.
    pub fn raise(&self, partitions: Partitions) {
        self.inner.dirty.fetch_or(partitions.0, Ordering::AcqRel);
        self.inner.raised.0.send_modify(|n| *n = n.wrapping_add(1));
        if !self.inner.pending.swap(true, Ordering::AcqRel) {
            self.inner.wake.notify_one();
        }
    }

    /// A subscription for one relay of this process.
    pub fn subscribe(&self) -> LocalWake {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        LocalWake {
            signal: self.clone(),
            raised: self.inner.raised.0.subscribe(),
            relay: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether a NOTIFY payload came from this process: its commit already woke this
    /// process's relays (before the NOTIFY was sent), so the notification adds nothing.
    pub fn is_own(&self, payload: &str) -> bool {
        payload == self.inner.origin.0
    }

    /// Whether NOTIFYs are sent (some relay may run in another process).
    pub fn notifies(&self) -> bool {
        let counted = self.inner.counted();
        counted.is_empty() || counted.values().any(|elsewhere| *elsewhere)
    }

    /// Issues the NOTIFYs until `shutdown`.
    pub async fn run_notifier(self, pool: PgPool, shutdown: beehive_common::Shutdown) {
        loop {
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = shutdown.wait_owned() => return,
            }
            self.inner.pending.store(false, Ordering::Release);
            if !self.notifies() {
                continue;
            }
            if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(OUTBOX_CHANNEL)
                .bind(&self.inner.origin.0)
                .execute(&pool)
                .await
            {
                // The relays' fallback poll picks the rows up.
                tracing::debug!(%error, "cannot notify the outbox relays");
            }
        }
    }
}

/// A process's NOTIFY payload: a random id.
struct OutboxOrigin(String);

impl Default for OutboxOrigin {
    fn default() -> Self {
        Self(Uuid::new_v4().simple().to_string())
    }
}

statement!(
    FIND_DIRECT,
    "SELECT id FROM message.conversations
      WHERE kind = {KIND_DIRECT} AND direct_low = $1 AND direct_high = $2"
);

statement!(
    CREATE_DIRECT,
    "WITH ins AS (
         INSERT INTO message.conversations (id, kind, direct_low, direct_high, member_count)
         VALUES ($1, {KIND_DIRECT}, $2, $3, 2)
         ON CONFLICT (direct_low, direct_high) WHERE kind = {KIND_DIRECT} DO NOTHING
         RETURNING id
     ), mem AS (
         INSERT INTO message.members (conversation_id, user_id, join_seq, delivered_seq, read_seq)
         SELECT ins.id, u.id, 0, 0, 0 FROM ins, unnest(ARRAY[$2, $3]::uuid[]) AS u(id)
     )
     SELECT id FROM ins"
);

statement!(
    SEND,
    "WITH conv AS (
         UPDATE message.conversations c
            SET last_seq = c.last_seq + 1, sort_at = now(), updated_at = now()
          WHERE c.id = $1
            AND EXISTS (SELECT 1 FROM message.members m
                         WHERE m.conversation_id = $1 AND m.user_id = $2)
            AND NOT EXISTS (SELECT 1 FROM message.messages d
                             WHERE d.sender_id = $2 AND d.client_msg_id = $3)
         RETURNING c.last_seq
     ), msg AS (
         INSERT INTO message.messages
                (conversation_id, seq, id, sender_id, client_msg_id, msg_type, content, file_id, created_at)
         SELECT $1, conv.last_seq, $4, $2, $3, $5, $6, $7, now() FROM conv
         RETURNING conversation_id, seq, id, sender_id, client_msg_id, msg_type, content, file_id, created_at
     ), me AS (
         UPDATE message.members m
            SET read_seq = GREATEST(m.read_seq, msg.seq),
                delivered_seq = GREATEST(m.delivered_seq, msg.seq)
           FROM msg
          WHERE m.conversation_id = $1 AND m.user_id = $2
     ), ob AS (
         INSERT INTO message.outbox (partition, conversation_id, kind, seq, user_id, device_id)
         SELECT $8, $1, {OUTBOX_MESSAGE}, msg.seq, $2, $9 FROM msg
     )
     SELECT * FROM msg"
);

statement!(
    SEND_BATCH,
    "WITH input AS (
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::int2[],
                              $6::text[], $7::uuid[], $8::int2[], $9::text[])
             WITH ORDINALITY AS t(conversation_id, sender_id, client_msg_id, id, msg_type,
                                  content, file_id, partition, device_id, n)
     ), fresh AS (
         SELECT DISTINCT ON (i.sender_id, i.client_msg_id) i.*
           FROM input i
          WHERE EXISTS (SELECT 1 FROM message.members m
                         WHERE m.conversation_id = i.conversation_id AND m.user_id = i.sender_id
                        OFFSET 0)
            AND NOT EXISTS (SELECT 1 FROM message.messages d
                             WHERE d.sender_id = i.sender_id AND d.client_msg_id = i.client_msg_id
                            OFFSET 0)
          ORDER BY i.sender_id, i.client_msg_id, i.n
     ), counts AS (
         SELECT conversation_id, count(*)::bigint AS k FROM fresh GROUP BY conversation_id
     ), locked AS (
         SELECT c.id
           FROM (SELECT conversation_id FROM counts ORDER BY conversation_id) k
          CROSS JOIN LATERAL (
                SELECT c.id FROM message.conversations c
                 WHERE c.id = k.conversation_id
                   FOR UPDATE
               ) c
     ), conv AS (
         UPDATE message.conversations c
            SET last_seq = c.last_seq + counts.k, sort_at = now(), updated_at = now()
           FROM counts, locked
          WHERE c.id = counts.conversation_id AND locked.id = c.id
         RETURNING c.id, c.last_seq - counts.k AS base
     ), numbered AS (
         SELECT f.*, conv.base + row_number() OVER (PARTITION BY f.conversation_id ORDER BY f.n) AS seq
           FROM fresh f JOIN conv ON conv.id = f.conversation_id
     ), msg AS (
         INSERT INTO message.messages
                (conversation_id, seq, id, sender_id, client_msg_id, msg_type, content, file_id, created_at)
         SELECT conversation_id, seq, id, sender_id, client_msg_id, msg_type, content, file_id, now()
           FROM numbered
         RETURNING conversation_id, seq, id, sender_id, client_msg_id, msg_type, content, file_id, created_at
     ), me AS (
         UPDATE message.members m
            SET read_seq = GREATEST(m.read_seq, x.seq),
                delivered_seq = GREATEST(m.delivered_seq, x.seq)
           FROM (SELECT conversation_id, sender_id, max(seq) AS seq
                   FROM numbered GROUP BY conversation_id, sender_id) x
          WHERE m.conversation_id = x.conversation_id AND m.user_id = x.sender_id
     ), ob AS (
         INSERT INTO message.outbox (partition, conversation_id, kind, seq, user_id, device_id)
         SELECT partition, conversation_id, {OUTBOX_MESSAGE}, seq, sender_id, device_id
           FROM numbered ORDER BY conversation_id, seq
     )
     SELECT numbered.n, msg.conversation_id, msg.seq, msg.id, msg.sender_id, msg.client_msg_id,
            msg.msg_type, msg.content, msg.file_id, msg.created_at
       FROM msg JOIN numbered ON numbered.id = msg.id"
);

// Plans and cached connections: sqlx prepares every statement once per connection, and
// after five executions PostgreSQL may keep a *generic* plan for the connection's life,
// planned from the statistics of that moment. A relay or pool connection opened on a
// fresh installation plans with empty tables, and a join of a parameter array with a
// table was then a hash join over a sequential scan of the whole table, kept while the
// table grew to millions of rows (only an ANALYZE invalidates it, and autovacuum may be
// off or late). So every statement on the message path reaches its rows through a form
// the planner cannot turn into a scan: a LATERAL subquery with LIMIT or ORDER BY (never
// pulled up into a join) for lookups by key arrays, and `OFFSET 0` in EXISTS tests
// (kept as per-row index probes). tests/plans.rs checks the generic plans of all of
// them on an empty and on a young, never analyzed database.

statement!(
    MESSAGES_AT,
    "SELECT m.conversation_id, m.seq, m.id, m.sender_id, m.client_msg_id, m.msg_type,
            m.content, m.file_id, m.created_at
       FROM unnest($1::uuid[], $2::bigint[]) AS k(cid, seq)
      CROSS JOIN LATERAL (
            SELECT * FROM message.messages x
             WHERE x.conversation_id = k.cid AND x.seq = k.seq
             LIMIT 1
           ) m"
);

statement!(
    MESSAGE_BY_CLIENT_ID,
    "SELECT {MESSAGE_COLUMNS} FROM message.messages WHERE sender_id = $1 AND client_msg_id = $2"
);

/// The statements of the message path (sends, the relay, sync, receipts) by name, for
/// tests/plans.rs: each must reach its rows through indexes in the generic plan a
/// connection caches on a new database (see the note above `MESSAGES_AT`).
pub fn message_path_statements() -> Vec<(&'static str, &'static str)> {
    vec![
        ("send", SEND.as_str()),
        ("send_batch", SEND_BATCH.as_str()),
        ("message_by_client_id", MESSAGE_BY_CLIENT_ID.as_str()),
        ("messages_at", MESSAGES_AT.as_str()),
        ("sync_messages", SYNC_MESSAGES),
        ("mark_read", MARK_READ.as_str()),
        ("mark_delivered", MARK_DELIVERED.as_str()),
        ("relay_fetch", relay::FETCH),
        ("relay_members_of", relay::MEMBERS_OF),
        ("relay_conversations", relay::CONVERSATIONS),
        ("relay_delete", relay::DELETE),
    ]
}

statement!(
    CREATE_GROUP,
    "WITH conv AS (
         INSERT INTO message.conversations (id, kind, name, owner_id, member_count)
         VALUES ($1, {KIND_GROUP}, $2, $3, cardinality($4::uuid[]))
         RETURNING id
     ), mem AS (
         INSERT INTO message.members (conversation_id, user_id, join_seq, delivered_seq, read_seq)
         SELECT conv.id, t.u, 0, 0, 0
           FROM conv, unnest($4::uuid[]) WITH ORDINALITY AS t(u, n)
          ORDER BY t.n
     ), ob AS (
         INSERT INTO message.outbox (partition, conversation_id, kind)
         SELECT $5, conv.id, {OUTBOX_CONVERSATION} FROM conv
     )
     SELECT 1 FROM conv"
);

statement!(
    UPDATE_GROUP,
    "WITH upd AS (
         UPDATE message.conversations c
            SET name = COALESCE($3, c.name), avatar = COALESCE($4, c.avatar),
                updated_at = now()
          WHERE c.id = $1 AND c.kind = {KIND_GROUP}
            AND EXISTS (SELECT 1 FROM message.members m
                         WHERE m.conversation_id = $1 AND m.user_id = $2)
         RETURNING c.id
     ), ob AS (
         INSERT INTO message.outbox (partition, conversation_id, kind)
         SELECT $5, upd.id, {OUTBOX_CONVERSATION} FROM upd
     )
     SELECT id FROM upd"
);

statement!(
    ANNOUNCE,
    "INSERT INTO message.outbox (partition, conversation_id, kind, extra_recipients)
     VALUES ($1, $2, {OUTBOX_CONVERSATION}, $3)"
);

statement!(
    MARK_READ,
    "WITH upd AS (
         UPDATE message.members m
            SET read_seq = LEAST($3, c.last_seq),
                delivered_seq = GREATEST(m.delivered_seq, LEAST($3, c.last_seq))
           FROM message.conversations c
          WHERE m.conversation_id = $1 AND m.user_id = $2 AND c.id = m.conversation_id
            AND LEAST($3, c.last_seq) > m.read_seq
         RETURNING m.conversation_id, m.user_id, m.delivered_seq, m.read_seq
     ), ob AS (
         INSERT INTO message.outbox (partition, conversation_id, kind, user_id)
         SELECT $4, upd.conversation_id, {OUTBOX_RECEIPT}, upd.user_id FROM upd
     )
     SELECT * FROM upd"
);

statement!(
    MARK_DELIVERED,
    "WITH upd AS (
         UPDATE message.members m
            SET delivered_seq = LEAST($3, c.last_seq)
           FROM message.conversations c
          WHERE m.conversation_id = $1 AND m.user_id = $2 AND c.id = m.conversation_id
            AND LEAST($3, c.last_seq) > m.delivered_seq
         RETURNING m.conversation_id, m.user_id, m.delivered_seq, m.read_seq
     ), ob AS (
         INSERT INTO message.outbox (partition, conversation_id, kind, user_id)
         SELECT $4, upd.conversation_id, {OUTBOX_RECEIPT}, upd.user_id FROM upd
     )
     SELECT * FROM upd"
);

/// The message service's data access.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    signal: OutboxSignal,
}

impl Store {
    /// A store over `pool` (migrated with [`crate::MIGRATOR`]) that raises `signal`
    /// after every commit that wrote outbox rows.
    pub fn new(pool: PgPool, signal: OutboxSignal) -> Self {
        Self { pool, signal }
    }

    /// The pool, for the relay's listener and readiness checks.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens a transaction for a change spanning several statements.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.pool.begin().await
    }

    /// Commits a transaction that wrote outbox rows and wakes the relays.
    pub async fn commit_with_outbox(&self, tx: Tx) -> Result<(), sqlx::Error> {
        tx.commit().await?;
        // The transaction may span conversations: every relay looks.
        self.signal.raise(Partitions::ALL);
        Ok(())
    }

    /// The direct conversation of a user pair (`low < high`), created with both
    /// members on first use. Concurrent first sends of one pair end in one row: the
    /// loser's insert waits on the unique index and then finds the winner's row.
    /// `None` only if the winner's row is gone by then (it never is: direct
    /// conversations are never deleted).
    pub async fn direct_conversation(
        &self,
        low: Uuid,
        high: Uuid,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        if let Some(id) = self.find_direct(low, high).await? {
            return Ok(Some(id));
        }
        let created: Option<Uuid> = sqlx::query_scalar(CREATE_DIRECT.as_str())
            .bind(Uuid::now_v7())
            .bind(low)
            .bind(high)
            .fetch_optional(&self.pool)
            .await?;
        if created.is_some() {
            return Ok(created);
        }
        self.find_direct(low, high).await
    }

    async fn find_direct(&self, low: Uuid, high: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
        sqlx::query_scalar(FIND_DIRECT.as_str())
            .bind(low)
            .bind(high)
            .fetch_optional(&self.pool)
            .await
    }

    /// Stores a message in one statement (one transaction): checks membership and
    /// (sender, client_msg_id), takes the next seq under the conversation row's lock,
    /// inserts the message, advances the sender's read and delivered seq and writes the
    /// outbox row. A concurrent duplicate fails on the unique index, which rolls the
    /// whole statement back (seq included, so no gap), and then finds the first copy.
    pub async fn send(
        &self,
        conversation_id: Uuid,
        message_id: Uuid,
        message: &NewMessage,
    ) -> Result<SendOutcome, sqlx::Error> {
        let result = sqlx::query_as::<_, MessageRow>(SEND.as_str())
            .bind(conversation_id)
            .bind(message.sender_id)
            .bind(&message.client_msg_id)
            .bind(message_id)
            .bind(message.msg_type as i16)
            .bind(&message.content)
            .bind(message.file_id)
            .bind(outbox_partition(conversation_id))
            .bind(&message.device_id)
            .fetch_optional(&self.pool)
            .await;
        match result {
            Ok(Some(row)) => {
                self.signal.raise(Partitions::of(conversation_id));
                Ok(SendOutcome::Stored(row))
            }
            // Either a duplicate (seen before the statement started) or no membership.
            Ok(None) => self.unsent(message).await,
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(UNIQUE_VIOLATION) => {
                // The first copy committed before our insert failed, so it is there;
                // not finding it is a broken invariant, reported as a missing row.
                self.message_by_client_id(message.sender_id, &message.client_msg_id)
                    .await?
                    .map(SendOutcome::Duplicate)
                    .ok_or(sqlx::Error::RowNotFound)
            }
            Err(e) => Err(e),
        }
    }

    /// Why a send wrote nothing: an earlier copy of it, or no membership.
    pub async fn unsent(&self, message: &NewMessage) -> Result<SendOutcome, sqlx::Error> {
        Ok(
            match self
                .message_by_client_id(message.sender_id, &message.client_msg_id)
                .await?
            {
                Some(first) => SendOutcome::Duplicate(first),
                None => SendOutcome::NotMember,
            },
        )
    }

    /// Whether a conversation exists at all.
    pub async fn conversation_exists(&self, conversation_id: Uuid) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM message.conversations WHERE id = $1)")
            .bind(conversation_id)
            .fetch_one(&self.pool)
            .await
    }

    /// Stores many sends in one statement and one commit (group commit): the sends
    /// that are new and come from members take consecutive seqs per conversation in
    /// input order; conversation rows are locked in id order so concurrent batches
    /// cannot deadlock. Returns `(input index, message)` for every send stored now;
    /// the others are duplicates or refusals, which the caller resolves one by one.
    /// Any error (a concurrent duplicate hitting the unique index, say) rolls the
    /// whole statement back and the caller falls back to [`Store::send`].
    pub async fn send_batch(
        &self,
        sends: &[(Uuid, Uuid, &NewMessage)],
    ) -> Result<Vec<(usize, MessageRow)>, sqlx::Error> {
        let mut conversation_ids = Vec::with_capacity(sends.len());
        let mut sender_ids = Vec::with_capacity(sends.len());
        let mut client_ids = Vec::with_capacity(sends.len());
        let mut message_ids = Vec::with_capacity(sends.len());
        let mut types = Vec::with_capacity(sends.len());
        let mut contents = Vec::with_capacity(sends.len());
        let mut files: Vec<Option<Uuid>> = Vec::with_capacity(sends.len());
        let mut partitions = Vec::with_capacity(sends.len());
        let mut devices = Vec::with_capacity(sends.len());
        for (conversation_id, message_id, message) in sends {
            conversation_ids.push(*conversation_id);
            sender_ids.push(message.sender_id);
            client_ids.push(message.client_msg_id.clone());
            message_ids.push(*message_id);
            types.push(message.msg_type as i16);
            contents.push(message.content.clone());
            files.push(message.file_id);
            partitions.push(outbox_partition(*conversation_id));
            devices.push(message.device_id.clone());
        }
        let rows: Vec<(i64, MessageRow)> = sqlx::query_as::<_, BatchRow>(SEND_BATCH.as_str())
            .bind(conversation_ids)
            .bind(sender_ids)
            .bind(client_ids)
            .bind(message_ids)
            .bind(types)
            .bind(contents)
            .bind(files)
            .bind(&partitions)
            .bind(devices)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| (r.n, r.message))
            .collect();
        if !rows.is_empty() {
            self.signal.raise(partitions.iter().copied().collect());
        }
        Ok(rows
            .into_iter()
            .filter_map(|(n, m)| usize::try_from(n - 1).ok().map(|i| (i, m)))
            .collect())
    }

    /// The message a sender stored under `client_msg_id`, if any.
    pub async fn message_by_client_id(
        &self,
        sender_id: Uuid,
        client_msg_id: &str,
    ) -> Result<Option<MessageRow>, sqlx::Error> {
        sqlx::query_as::<_, MessageRow>(MESSAGE_BY_CLIENT_ID.as_str())
            .bind(sender_id)
            .bind(client_msg_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Creates a group with `members` (the owner first) and announces it.
    pub async fn create_group(
        &self,
        id: Uuid,
        owner: Uuid,
        name: &str,
        members: &[Uuid],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(CREATE_GROUP.as_str())
            .bind(id)
            .bind(name)
            .bind(owner)
            .bind(members)
            .bind(outbox_partition(id))
            .execute(&self.pool)
            .await?;
        self.signal.raise(Partitions::of(id));
        Ok(())
    }

    /// Renames a group or changes its avatar and announces it, when `user` is a member
    /// and the conversation is a group. `None` fields stay as they are. Returns whether
    /// it changed anything (false: not a member, no such conversation, or not a group).
    pub async fn update_group(
        &self,
        user: Uuid,
        conversation_id: Uuid,
        name: Option<&str>,
        avatar: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        let updated: Option<Uuid> = sqlx::query_scalar(UPDATE_GROUP.as_str())
            .bind(conversation_id)
            .bind(user)
            .bind(name)
            .bind(avatar)
            .bind(outbox_partition(conversation_id))
            .fetch_optional(&self.pool)
            .await?;
        if updated.is_some() {
            self.signal.raise(Partitions::of(conversation_id));
        }
        Ok(updated.is_some())
    }

    /// Locks a conversation row for a membership change when `user` is a member of it;
    /// `None` otherwise. Conversation row first, member rows after: the lock order of
    /// every statement here.
    pub async fn tx_lock_for_member(
        tx: &mut Tx,
        conversation_id: Uuid,
        user: Uuid,
    ) -> Result<Option<LockedConversation>, sqlx::Error> {
        sqlx::query_as::<_, LockedConversation>(
            "SELECT c.kind, c.last_seq, c.member_count, c.owner_id FROM message.conversations c
              WHERE c.id = $1
                AND EXISTS (SELECT 1 FROM message.members m
                             WHERE m.conversation_id = $1 AND m.user_id = $2)
                FOR UPDATE",
        )
        .bind(conversation_id)
        .bind(user)
        .fetch_optional(&mut **tx)
        .await
    }

    /// Inserts members (in the given order) starting at `join_seq`; returns the ones
    /// that were not members yet.
    pub async fn tx_insert_members(
        tx: &mut Tx,
        conversation_id: Uuid,
        new_members: &[Uuid],
        join_seq: i64,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(
            "INSERT INTO message.members (conversation_id, user_id, join_seq, delivered_seq, read_seq)
             SELECT $1, t.u, $3, $3, $3 FROM unnest($2::uuid[]) WITH ORDINALITY AS t(u, n)
              ORDER BY t.n
             ON CONFLICT (conversation_id, user_id) DO NOTHING
             RETURNING user_id",
        )
        .bind(conversation_id)
        .bind(new_members)
        .bind(join_seq)
        .fetch_all(&mut **tx)
        .await
    }

    /// Counts `added` new members on the conversation row.
    pub async fn tx_count_added_members(
        tx: &mut Tx,
        conversation_id: Uuid,
        added: usize,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE message.conversations
                SET member_count = member_count + $2, updated_at = now()
              WHERE id = $1",
        )
        .bind(conversation_id)
        .bind(i32::try_from(added).unwrap_or(i32::MAX))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Deletes one member row; returns whether there was one.
    pub async fn tx_delete_member(
        tx: &mut Tx,
        conversation_id: Uuid,
        member: Uuid,
    ) -> Result<bool, sqlx::Error> {
        let removed =
            sqlx::query("DELETE FROM message.members WHERE conversation_id = $1 AND user_id = $2")
                .bind(conversation_id)
                .bind(member)
                .execute(&mut **tx)
                .await?
                .rows_affected();
        Ok(removed > 0)
    }

    /// Uncounts a removed member; when it was the owner, the longest-standing remaining
    /// member becomes owner.
    pub async fn tx_count_removed_member(
        tx: &mut Tx,
        conversation_id: Uuid,
        member: Uuid,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE message.conversations c
                SET member_count = c.member_count - 1, updated_at = now(),
                    owner_id = CASE WHEN c.owner_id = $2 THEN
                                   (SELECT m.user_id FROM message.members m
                                     WHERE m.conversation_id = $1
                                     ORDER BY m.member_no LIMIT 1)
                               ELSE c.owner_id END
              WHERE c.id = $1",
        )
        .bind(conversation_id)
        .bind(member)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Queues a conversation_updated announcement in the transaction; the
    /// `extra_recipients` (a removed member) hear it besides the current members.
    pub async fn tx_announce(
        tx: &mut Tx,
        conversation_id: Uuid,
        extra_recipients: Option<Vec<Uuid>>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(ANNOUNCE.as_str())
            .bind(outbox_partition(conversation_id))
            .bind(conversation_id)
            .bind(extra_recipients)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The caller's join seq in a conversation, or `None` when it is not a member.
    pub async fn membership(
        &self,
        user: Uuid,
        conversation_id: Uuid,
    ) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT join_seq FROM message.members WHERE conversation_id = $1 AND user_id = $2",
        )
        .bind(conversation_id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await
    }

    /// One conversation as `user` sees it; `None` when it is not a member.
    pub async fn conversation(
        &self,
        user: Uuid,
        conversation_id: Uuid,
    ) -> Result<Option<ConversationView>, sqlx::Error> {
        let row = sqlx::query_as::<_, MemberConversationRow>(
            "SELECT c.id, c.kind, c.name, c.avatar, c.owner_id, c.last_seq, c.updated_at, c.sort_at,
                    m.join_seq, m.read_seq
               FROM message.members m JOIN message.conversations c ON c.id = m.conversation_id
              WHERE m.user_id = $1 AND m.conversation_id = $2",
        )
        .bind(user)
        .bind(conversation_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(self.complete(vec![row]).await?.pop())
    }

    /// A page of `user`'s conversations, newest activity first, after `after`.
    pub async fn conversations(
        &self,
        user: Uuid,
        after: Option<ListAfter>,
        limit: u32,
    ) -> Result<Vec<ConversationView>, sqlx::Error> {
        let rows = sqlx::query_as::<_, MemberConversationRow>(
            "SELECT c.id, c.kind, c.name, c.avatar, c.owner_id, c.last_seq, c.updated_at, c.sort_at,
                    m.join_seq, m.read_seq
               FROM message.members m JOIN message.conversations c ON c.id = m.conversation_id
              WHERE m.user_id = $1
                AND ($2::timestamptz IS NULL OR (c.sort_at, c.id) < ($2, $3))
              ORDER BY c.sort_at DESC, c.id DESC
              LIMIT $4",
        )
        .bind(user)
        .bind(after.map(|a| a.sort_at))
        .bind(after.map(|a| a.id))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.complete(rows).await
    }

    /// Adds member lists and visible last messages to conversation rows (two queries
    /// for any number of rows).
    async fn complete(
        &self,
        rows: Vec<MemberConversationRow>,
    ) -> Result<Vec<ConversationView>, sqlx::Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.conversation.id).collect();
        let members: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT conversation_id, user_id FROM message.members
              WHERE conversation_id = ANY($1) ORDER BY conversation_id, member_no",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut members_of: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for (conversation, user) in members {
            members_of.entry(conversation).or_default().push(user);
        }
        let (last_ids, last_seqs): (Vec<Uuid>, Vec<i64>) = rows
            .iter()
            .filter(|r| r.conversation.last_seq > r.join_seq)
            .map(|r| (r.conversation.id, r.conversation.last_seq))
            .unzip();
        let mut last_of: HashMap<Uuid, MessageRow> = HashMap::new();
        if !last_ids.is_empty() {
            let last = self.messages_at(&last_ids, &last_seqs).await?;
            last_of.extend(last.into_iter().map(|m| (m.conversation_id, m)));
        }
        Ok(rows
            .into_iter()
            .map(|row| ConversationView {
                member_ids: members_of.remove(&row.conversation.id).unwrap_or_default(),
                last_message: last_of.remove(&row.conversation.id),
                row,
            })
            .collect())
    }

    /// Messages by (conversation, seq) pairs.
    async fn messages_at(
        &self,
        ids: &[Uuid],
        seqs: &[i64],
    ) -> Result<Vec<MessageRow>, sqlx::Error> {
        messages_at(&self.pool, ids, seqs).await
    }

    /// Messages of one conversation within `window`, ascending by seq.
    pub async fn history(
        &self,
        conversation_id: Uuid,
        window: HistoryWindow,
    ) -> Result<Vec<MessageRow>, sqlx::Error> {
        let order = if window.newest_first { "DESC" } else { "ASC" };
        let mut rows = sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM message.messages
              WHERE conversation_id = $1 AND seq > $2 AND seq < $3
              ORDER BY seq {order} LIMIT $4"
        )))
        .bind(conversation_id)
        .bind(window.after)
        .bind(window.before)
        .bind(window.limit)
        .fetch_all(&self.pool)
        .await?;
        if window.newest_first {
            rows.reverse();
        }
        Ok(rows)
    }

    /// Whether a message carrying `file` was sent in a conversation `user` is a member
    /// of, after `user` joined it.
    pub async fn file_visible_to(&self, user: Uuid, file: Uuid) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (
                 SELECT 1 FROM message.messages msg
                   JOIN message.members m
                     ON m.conversation_id = msg.conversation_id AND m.user_id = $1
                  WHERE msg.file_id = $2 AND msg.seq > m.join_seq)",
        )
        .bind(user)
        .bind(file)
        .fetch_one(&self.pool)
        .await
    }

    /// Up to `limit` messages of every conversation after `after` in (conversation_id,
    /// seq) order: the primary key's order, so each page is one index range scan.
    pub async fn history_page(
        &self,
        after: Option<(Uuid, i64)>,
        limit: u32,
    ) -> Result<Vec<MessageRow>, sqlx::Error> {
        let (conversation, seq) = after.unwrap_or((Uuid::nil(), -1));
        sqlx::query_as::<_, MessageRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM message.messages
              WHERE (conversation_id, seq) > ($1, $2)
              ORDER BY conversation_id, seq LIMIT $3"
        )))
        .bind(conversation)
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
    }

    /// Every conversation of `user` with its progress, most recently active first.
    pub async fn sync_memberships(&self, user: Uuid) -> Result<Vec<SyncMembership>, sqlx::Error> {
        let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(
            "SELECT m.conversation_id, m.join_seq, m.read_seq, c.last_seq
               FROM message.members m JOIN message.conversations c ON c.id = m.conversation_id
              WHERE m.user_id = $1
              ORDER BY c.sort_at DESC, c.id DESC",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(conversation_id, join, read, last)| SyncMembership {
                conversation_id,
                join_seq: to_u64(join),
                read_seq: to_u64(read),
                last_seq: to_u64(last),
            })
            .collect())
    }

    /// The messages of sync windows, window by window, ascending by seq in each (one
    /// query for all windows).
    pub async fn sync_messages(
        &self,
        windows: &[SyncWindow],
    ) -> Result<Vec<MessageRow>, sqlx::Error> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = windows.iter().map(|w| w.conversation_id).collect();
        let after: Vec<i64> = windows.iter().map(|w| to_i64(w.after)).collect();
        let take: Vec<i64> = windows.iter().map(|w| to_i64(w.take)).collect();
        sqlx::query_as::<_, MessageRow>(SYNC_MESSAGES)
            .bind(&ids)
            .bind(&after)
            .bind(&take)
            .fetch_all(&self.pool)
            .await
    }

    /// Moves the caller's delivered or read seq up to `seq` (never down, never above
    /// last_seq; reading implies delivery) and queues a receipt when it moved. Returns
    /// the receipt, or `None` when the caller is not a member.
    pub async fn mark(
        &self,
        user: Uuid,
        conversation_id: Uuid,
        seq: i64,
        mark: Mark,
    ) -> Result<Option<ReceiptRow>, sqlx::Error> {
        let statement = match mark {
            Mark::Read => MARK_READ.as_str(),
            Mark::Delivered => MARK_DELIVERED.as_str(),
        };
        let moved = sqlx::query_as::<_, ReceiptRow>(statement)
            .bind(conversation_id)
            .bind(user)
            .bind(seq)
            .bind(outbox_partition(conversation_id))
            .fetch_optional(&self.pool)
            .await?;
        if moved.is_some() {
            self.signal.raise(Partitions::of(conversation_id));
            return Ok(moved);
        }
        sqlx::query_as::<_, ReceiptRow>(
            "SELECT conversation_id, user_id, delivered_seq, read_seq FROM message.members
              WHERE conversation_id = $1 AND user_id = $2",
        )
        .bind(conversation_id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await
    }

    /// Every member's receipt, or `None` when `user` is not a member.
    pub async fn receipts(
        &self,
        user: Uuid,
        conversation_id: Uuid,
    ) -> Result<Option<Vec<ReceiptRow>>, sqlx::Error> {
        let rows = sqlx::query_as::<_, ReceiptRow>(
            "SELECT conversation_id, user_id, delivered_seq, read_seq FROM message.members
              WHERE conversation_id = $1 ORDER BY member_no",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().any(|r| r.user_id == user).then_some(rows))
    }

    /// Every member of a conversation, or `None` when `user` is not one of them.
    pub async fn members(
        &self,
        user: Uuid,
        conversation_id: Uuid,
    ) -> Result<Option<Vec<Uuid>>, sqlx::Error> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM message.members WHERE conversation_id = $1 ORDER BY member_no",
        )
        .bind(conversation_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.contains(&user).then_some(ids))
    }

    /// The candidates that share at least one conversation with `user`.
    pub async fn conversation_peers(
        &self,
        user: Uuid,
        candidates: &[Uuid],
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        sqlx::query_scalar(
            "SELECT DISTINCT o.user_id
               FROM message.members o
               JOIN message.members me ON me.conversation_id = o.conversation_id AND me.user_id = $1
              WHERE o.user_id = ANY($2) AND o.user_id <> $1",
        )
        .bind(user)
        .bind(candidates)
        .fetch_all(&self.pool)
        .await
    }
}

/// The statement of [`Store::sync_messages`].
const SYNC_MESSAGES: &str = "SELECT m.conversation_id, m.seq, m.id, m.sender_id, m.client_msg_id, m.msg_type,
                    m.content, m.file_id, m.created_at
               FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS w(cid, after, take, n)
              CROSS JOIN LATERAL (
                    SELECT * FROM message.messages x
                     WHERE x.conversation_id = w.cid AND x.seq > w.after AND x.seq <= w.after + w.take
                     ORDER BY x.seq
              ) m
              ORDER BY w.n, m.seq";

/// Messages by (conversation, seq) pairs, on any executor (the relay uses its own
/// connection).
pub async fn messages_at<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    ids: &[Uuid],
    seqs: &[i64],
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(MESSAGES_AT.as_str())
        .bind(ids)
        .bind(seqs)
        .fetch_all(executor)
        .await
}

/// The outbox relay's statements. They all run on the relay's own connection, the one
/// holding its partition locks: if that connection dies, its work fails with it instead
/// of continuing on partitions another relay may already have taken.
pub mod relay {
    use super::*;

    /// The statement of [`fetch`].
    pub const FETCH: &str = "SELECT o.id, o.partition, o.conversation_id, o.kind, o.seq, o.user_id,
                    o.device_id, o.extra_recipients, o.attempts, o.created_at
               FROM unnest($1::smallint[]) AS p(partition)
              CROSS JOIN LATERAL (
                    SELECT * FROM message.outbox o
                     WHERE o.partition = p.partition
                       AND (o.attempts = 0 OR o.available_at <= now())
                       AND NOT EXISTS (SELECT 1 FROM message.outbox h
                                        WHERE h.attempts > 0 AND h.available_at > now()
                                          AND h.conversation_id = o.conversation_id
                                          AND h.id < o.id)
                     ORDER BY o.id
                     LIMIT $3
                   ) o
              ORDER BY o.id
              LIMIT $2";

    /// The statement of [`members_of`].
    pub const MEMBERS_OF: &str =
        "SELECT conversation_id, user_id, join_seq, delivered_seq, read_seq
               FROM message.members WHERE conversation_id = ANY($1)
              ORDER BY conversation_id, member_no";

    /// The statement of [`conversations`].
    pub const CONVERSATIONS: &str = "SELECT c.id, c.kind, c.name, c.avatar, c.owner_id, c.last_seq,
                c.updated_at, c.sort_at
           FROM unnest($1::uuid[]) AS k(id)
          CROSS JOIN LATERAL (
                SELECT * FROM message.conversations c WHERE c.id = k.id LIMIT 1
               ) c";

    /// The statement of [`delete`].
    pub const DELETE: &str = "DELETE FROM message.outbox WHERE id = ANY($1)";

    /// First key of the outbox partition advisory locks ("MSGR").
    pub const PARTITION_LOCK_KEY: i32 = 0x4D53_4752;
    /// First key of the shared lock every running relay holds ("MSGI"), so relays can
    /// count each other and share partitions fairly.
    pub const RELAY_LOCK_KEY: i32 = 0x4D53_4749;

    /// An outbox row.
    #[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
    pub struct OutboxRow {
        pub id: i64,
        pub partition: i16,
        pub conversation_id: Uuid,
        pub kind: i16,
        pub seq: Option<i64>,
        pub user_id: Option<Uuid>,
        pub device_id: Option<String>,
        pub extra_recipients: Option<Vec<Uuid>>,
        pub attempts: i32,
        /// When the row was committed (relay lag is measured from here).
        pub created_at: DateTime<Utc>,
    }

    /// Vacuums the outbox (skipped if another vacuum holds it). Without the owner's
    /// rights PostgreSQL skips it with a warning, and the statement still succeeds.
    pub async fn vacuum(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("VACUUM (SKIP_LOCKED) message.outbox")
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Rows waiting in the outbox, in every partition (the backlog behind the relays).
    pub async fn depth(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT count(*) FROM message.outbox")
            .fetch_one(conn)
            .await
    }

    /// Announces this relay (a shared lock held for the connection's life).
    pub async fn join(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_lock_shared($1, 0)")
            .bind(RELAY_LOCK_KEY)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// How many relays are running against this database (this one included).
    pub async fn live_relays(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT count(DISTINCT pid) FROM pg_locks
              WHERE locktype = 'advisory' AND granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND classid = $1::bigint::oid AND objid = 0 AND objsubid = 2",
        )
        .bind(i64::from(RELAY_LOCK_KEY))
        .fetch_one(conn)
        .await
    }

    /// Tries to take one partition; true when this connection now holds it.
    pub async fn try_lock_partition(
        conn: &mut PgConnection,
        partition: i16,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(PARTITION_LOCK_KEY)
            .bind(i32::from(partition))
            .fetch_one(conn)
            .await
    }

    /// Gives a partition back.
    pub async fn unlock_partition(
        conn: &mut PgConnection,
        partition: i16,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(PARTITION_LOCK_KEY)
            .bind(i32::from(partition))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Up to `limit` publishable rows of `partitions`, oldest first, and whether more
    /// may be waiting. A row waiting out a retry delay holds back the later rows of its
    /// conversation, so a conversation is always published in seq order.
    ///
    /// Each partition is read on its own from its oldest row, at most
    /// [`per_partition`] rows (an ordered range scan of `outbox_by_partition` that
    /// stops there; held-back rows are found through the partial index `outbox_held`,
    /// normally empty), then the oldest `limit` of all are kept. A queue table is
    /// mostly dead rows between vacuums and its statistics never describe it: one
    /// scan over all partitions was planned as a scan of the whole table, and a
    /// per-partition cap above the planner's row estimate as a bitmap scan of every
    /// row of the partition, both growing with the backlog they should drain.
    pub async fn fetch(
        conn: &mut PgConnection,
        partitions: &[i16],
        limit: i64,
    ) -> Result<(Vec<OutboxRow>, bool), sqlx::Error> {
        let cap = per_partition(limit, partitions.len());
        let rows = sqlx::query_as::<_, OutboxRow>(FETCH)
            .bind(partitions.to_vec())
            .bind(limit)
            .bind(cap)
            .fetch_all(conn)
            .await?;
        let more = rows.len() as i64 >= limit || {
            let mut per: HashMap<i16, i64> = HashMap::new();
            rows.iter()
                .any(|r| *per.entry(r.partition).and_modify(|n| *n += 1).or_insert(1) >= cap)
        };
        Ok((rows, more))
    }

    /// Rows read per partition in one fetch of `limit` over `partitions` partitions:
    /// an even share, but at least 64 (one busy partition still fills a good batch).
    pub fn per_partition(limit: i64, partitions: usize) -> i64 {
        let partitions = i64::try_from(partitions.max(1)).unwrap_or(i64::MAX);
        ((limit + partitions - 1) / partitions)
            .max(64)
            .min(limit.max(1))
    }

    /// Members of `conversations`, in member order.
    pub async fn members_of(
        conn: &mut PgConnection,
        conversations: &[Uuid],
    ) -> Result<Vec<MemberRow>, sqlx::Error> {
        sqlx::query_as::<_, MemberRow>(MEMBERS_OF)
            .bind(conversations)
            .fetch_all(conn)
            .await
    }

    /// Conversation rows by id.
    pub async fn conversations(
        conn: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<Vec<ConversationRow>, sqlx::Error> {
        sqlx::query_as::<_, ConversationRow>(CONVERSATIONS)
            .bind(ids)
            .fetch_all(conn)
            .await
    }

    /// Deletes published rows.
    pub async fn delete(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(DELETE).bind(ids).execute(conn).await?;
        Ok(())
    }

    /// Counts a failed attempt and delays the next one exponentially
    /// (`base_ms * 2^attempts`, at most `max_ms`).
    pub async fn hold(
        conn: &mut PgConnection,
        ids: &[i64],
        error: &str,
        base_ms: f64,
        max_ms: f64,
    ) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE message.outbox
                SET attempts = attempts + 1, last_error = $2,
                    available_at = now() + LEAST($3 * power(2, attempts), $4) * interval '1 millisecond'
              WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(error)
        .bind(base_ms)
        .bind(max_ms)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Moves rows that keep failing to the dead-letter table.
    pub async fn bury(
        conn: &mut PgConnection,
        ids: &[i64],
        error: &str,
    ) -> Result<(), sqlx::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "WITH gone AS (DELETE FROM message.outbox WHERE id = ANY($1) RETURNING *)
             INSERT INTO message.outbox_dead
                    (id, partition, conversation_id, kind, seq, user_id, device_id,
                     extra_recipients, attempts, last_error, created_at)
             SELECT id, partition, conversation_id, kind, seq, user_id, device_id,
                    extra_recipients, attempts + 1, $2, created_at
               FROM gone",
        )
        .bind(ids)
        .bind(error)
        .execute(conn)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_recognises_its_own_notifications_only() {
        let ours = OutboxSignal::default();
        let theirs = OutboxSignal::default();
        let payload = ours.inner.origin.0.clone();
        assert!(ours.is_own(&payload));
        assert!(ours.clone().is_own(&payload), "clones share the origin");
        assert!(!theirs.is_own(&payload));
        // An empty payload (an older process's NOTIFY) is never ours.
        assert!(!ours.is_own(""));
    }

    #[test]
    fn a_fetch_reads_an_even_share_of_each_partition_but_never_little() {
        use super::relay::per_partition;
        assert_eq!(per_partition(500, 16), 64);
        assert_eq!(per_partition(500, 4), 125);
        assert_eq!(per_partition(500, 1), 500);
        assert_eq!(per_partition(100, 16), 64);
        assert_eq!(per_partition(10, 16), 10, "never above the batch");
        assert_eq!(per_partition(500, 0), 500);
    }

    /// Whether `wake` completes without waiting.
    fn ready(wake: &mut LocalWake, owned: Partitions) -> bool {
        use futures::FutureExt;
        wake.raised(owned).now_or_never().is_some()
    }

    #[test]
    fn a_commit_wakes_the_relay_owning_its_partition_once() {
        let signal = OutboxSignal::default();
        let (mut a, mut b) = (signal.subscribe(), signal.subscribe());
        let owned_a: Partitions = [0, 1].into_iter().collect();
        let owned_b: Partitions = [2, 3].into_iter().collect();
        assert!(!ready(&mut a, owned_a) && !ready(&mut b, owned_b));
        signal.raise([1].into_iter().collect());
        assert!(!ready(&mut b, owned_b), "not b's partition");
        assert!(ready(&mut a, owned_a));
        assert!(!ready(&mut a, owned_a), "taken by the first wake-up");
        // A raise while a relay was busy is seen when it next waits.
        signal.raise([0, 3].into_iter().collect());
        signal.raise(Partitions::ALL);
        assert!(ready(&mut a, owned_a) && ready(&mut b, owned_b));
        assert!(!ready(&mut a, owned_a) && !ready(&mut b, owned_b));
        // Partitions outside 0..64 are ignored rather than overflowing the mask.
        assert!(Partitions::from_iter([-1, 64]).is_empty());
    }

    #[test]
    fn notifications_stop_only_while_every_live_relay_is_local() {
        let signal = OutboxSignal::default();
        assert!(signal.notifies(), "nobody counted yet");
        let (a, b) = (signal.subscribe(), signal.subscribe());
        let (joined_a, _joined_b) = (a.joined(), b.joined());
        a.counted_relays(2);
        assert!(!signal.notifies(), "both live relays are ours");
        b.counted_relays(3);
        assert!(signal.notifies(), "b saw a relay elsewhere");
        b.counted_relays(2);
        assert!(!signal.notifies());
        // a's session ended: the database still counts 2, one of them elsewhere.
        drop(joined_a);
        b.counted_relays(2);
        assert!(signal.notifies());
        b.counted_relays(1);
        assert!(!signal.notifies());
        // With no relay left to count, notify again.
        drop((a, b));
        assert!(signal.notifies());
    }
}
