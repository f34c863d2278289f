//! Every SQL statement of the social service.
//!
//! Changes to the relationship of two users run in a [`PairTx`]: a transaction holding
//! the pair's advisory lock, so concurrent requests between the same two users are
//! serialized while unrelated pairs proceed in parallel.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::friends::{StoredStatus, pair_lock_key};
use beehive_common::Result;

/// One row of `social.friend_requests`.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RequestRow {
    /// The request id (UUID v7).
    pub id: Uuid,
    /// Who asked.
    pub from_user_id: Uuid,
    /// Who may accept or reject.
    pub to_user_id: Uuid,
    /// The sender's note, at most 256 characters.
    pub message: String,
    /// [`StoredStatus`] code.
    pub status: i16,
    /// Database time of creation; expiry and the duplicate window count from it.
    pub created_at: DateTime<Utc>,
}

const REQUEST_COLUMNS: &str = "id, from_user_id, to_user_id, message, status, created_at";

/// [`StoredStatus`] codes as SQL literals (not bind parameters: the pending-only
/// partial indexes are usable only when the query carries the literal).
const PENDING: i16 = StoredStatus::Pending.code();
const EXPIRED: i16 = StoredStatus::Expired.code();

/// The social service's database access.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// A store over `pool` (migrated with [`crate::MIGRATOR`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Opens a transaction that holds the advisory lock of the pair `a`, `b`.
    pub async fn begin_pair(&self, a: Uuid, b: Uuid) -> Result<PairTx> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(pair_lock_key(a, b))
            .execute(&mut *tx)
            .await?;
        Ok(PairTx { tx })
    }

    /// A request by id, whatever its state.
    pub async fn request(&self, id: Uuid) -> Result<Option<RequestRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM social.friend_requests WHERE id = $1"
        ));
        Ok(sqlx::query_as::<_, RequestRow>(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Pending requests younger than `lifetime` to (`incoming`) or from `user`, newest
    /// first, strictly after the cursor position.
    pub async fn pending_requests(
        &self,
        user: Uuid,
        incoming: bool,
        after: Option<(DateTime<Utc>, Uuid)>,
        lifetime: Duration,
        limit: i64,
    ) -> Result<Vec<RequestRow>> {
        let column = if incoming {
            "to_user_id"
        } else {
            "from_user_id"
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM social.friend_requests \
             WHERE {column} = $1 AND status = {PENDING} \
               AND created_at > now() - make_interval(secs => $2) \
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4)) \
             ORDER BY created_at DESC, id DESC LIMIT $5"
        ));
        let (after_time, after_id) = after.unzip();
        Ok(sqlx::query_as::<_, RequestRow>(sql)
            .bind(user)
            .bind(lifetime.as_secs_f64())
            .bind(after_time)
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Marks pending requests older than `lifetime` as expired, at most `batch` per
    /// call; returns how many. Reads already treat them as expired; this keeps the
    /// pending-only indexes small.
    pub async fn expire_stale(&self, lifetime: Duration, batch: i64) -> Result<u64> {
        let sql = sqlx::AssertSqlSafe(format!(
            "UPDATE social.friend_requests SET status = {EXPIRED}, decided_at = now() \
             WHERE id IN (SELECT id FROM social.friend_requests \
                          WHERE status = {PENDING} AND created_at <= now() - make_interval(secs => $1) \
                          LIMIT $2 FOR UPDATE SKIP LOCKED)"
        ));
        let done = sqlx::query(sql)
            .bind(lifetime.as_secs_f64())
            .bind(batch)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Friends of `user` ordered by id, strictly after `after`.
    pub async fn friends(&self, user: Uuid, after: Option<Uuid>, limit: i64) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT friend_id FROM social.friendships \
             WHERE user_id = $1 AND ($2::uuid IS NULL OR friend_id > $2) \
             ORDER BY friend_id LIMIT $3",
        )
        .bind(user)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether `a` and `b` are friends.
    pub async fn are_friends(&self, a: Uuid, b: Uuid) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM social.friendships WHERE user_id = $1 AND friend_id = $2)",
        )
        .bind(a)
        .bind(b)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The members of `candidates` that are friends of `user` (in no particular order).
    pub async fn filter_friends(&self, user: Uuid, candidates: &[Uuid]) -> Result<Vec<Uuid>> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(
            "SELECT friend_id FROM social.friendships WHERE user_id = $1 AND friend_id = ANY($2)",
        )
        .bind(user)
        .bind(candidates)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A transaction holding one user pair's advisory lock.
pub struct PairTx {
    tx: Transaction<'static, Postgres>,
}

impl PairTx {
    /// Whether `a` and `b` are friends.
    pub async fn are_friends(&mut self, a: Uuid, b: Uuid) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM social.friendships WHERE user_id = $1 AND friend_id = $2)",
        )
        .bind(a)
        .bind(b)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// The stored-pending request from `from` to `to`, if any (at most one exists),
    /// whatever its age.
    pub async fn pending_request(&mut self, from: Uuid, to: Uuid) -> Result<Option<RequestRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM social.friend_requests \
             WHERE from_user_id = $1 AND to_user_id = $2 AND status = {PENDING} FOR UPDATE"
        ));
        Ok(sqlx::query_as::<_, RequestRow>(sql)
            .bind(from)
            .bind(to)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    /// A request by id, locked for the rest of the transaction.
    pub async fn request_for_update(&mut self, id: Uuid) -> Result<Option<RequestRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {REQUEST_COLUMNS} FROM social.friend_requests WHERE id = $1 FOR UPDATE"
        ));
        Ok(sqlx::query_as::<_, RequestRow>(sql)
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    /// The database clock, so every age comparison of a transaction uses one clock.
    pub async fn now(&mut self) -> Result<DateTime<Utc>> {
        Ok(sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *self.tx)
            .await?)
    }

    /// Moves a request to `status`, recording when it was decided.
    pub async fn set_status(&mut self, id: Uuid, status: StoredStatus) -> Result<()> {
        sqlx::query(
            "UPDATE social.friend_requests SET status = $2, decided_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(status.code())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Stores a new pending request; `None` when the unique index of pending requests
    /// refused it (another pending request of the pair exists).
    pub async fn insert_request(
        &mut self,
        id: Uuid,
        from: Uuid,
        to: Uuid,
        message: &str,
    ) -> Result<Option<RequestRow>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO social.friend_requests (id, from_user_id, to_user_id, message, status) \
             VALUES ($1, $2, $3, $4, {PENDING}) RETURNING {REQUEST_COLUMNS}"
        ));
        let inserted = sqlx::query_as::<_, RequestRow>(sql)
            .bind(id)
            .bind(from)
            .bind(to)
            .bind(message)
            .fetch_one(&mut *self.tx)
            .await;
        match inserted {
            Ok(row) => Ok(Some(row)),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Makes `a` and `b` friends in both directions (idempotent).
    pub async fn insert_friendship(&mut self, a: Uuid, b: Uuid) -> Result<()> {
        sqlx::query(
            "INSERT INTO social.friendships (user_id, friend_id) VALUES ($1, $2), ($2, $1) \
             ON CONFLICT DO NOTHING",
        )
        .bind(a)
        .bind(b)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Ends the friendship of `a` and `b` in both directions; the number of rows
    /// removed (0 when they were not friends).
    pub async fn delete_friendship(&mut self, a: Uuid, b: Uuid) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM social.friendships \
             WHERE (user_id = $1 AND friend_id = $2) OR (user_id = $2 AND friend_id = $1)",
        )
        .bind(a)
        .bind(b)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    /// Commits.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
