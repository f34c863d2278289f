//! Every SQL statement of the user service (schema `users`), nothing else.

use beehive_common::Result;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One row of `users.users`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    /// UUID v7.
    pub id: Uuid,
    /// As registered; unique ignoring case.
    pub username: String,
    /// Display name.
    pub nickname: String,
    /// Avatar URL or server path; empty for none.
    pub avatar: String,
    /// Free profile text.
    pub description: String,
    /// Canonical (lowercase) address, verified when verification is on.
    pub email: Option<String>,
    /// argon2id PHC string; never leaves the service.
    pub password_hash: String,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}

const USER_COLUMNS: &str =
    "id, username, nickname, avatar, description, email, password_hash, created_at";

/// A pending verification code, as read under lock during registration.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRow {
    /// SHA-256 of (email, code).
    pub code_hash: Vec<u8>,
    /// Past its 5 minutes.
    pub expired: bool,
    /// Wrong guesses so far.
    pub attempts: i32,
}

/// A unique index an insert ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The username, ignoring case.
    Username,
    /// The email address.
    Email,
}

/// The store over one pool.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// A store over `pool` (migrated with [`crate::MIGRATOR`]).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool, for transactions spanning several statements.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts a user; `Err(Ok(Taken))` when a unique index refuses it.
    pub async fn insert_user(
        conn: &mut PgConnection,
        user: &UserRow,
    ) -> Result<std::result::Result<(), Taken>> {
        let result = sqlx::query(
            "INSERT INTO users.users
                 (id, username, nickname, avatar, description, email, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(user.id)
        .bind(&user.username)
        .bind(&user.nickname)
        .bind(&user.avatar)
        .bind(&user.description)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .execute(&mut *conn)
        .await;
        match result {
            Ok(_) => Ok(Ok(())),
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
                Ok(Err(match db.constraint() {
                    Some("users_email_key") => Taken::Email,
                    _ => Taken::Username,
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a username (ignoring case) is taken: a cheap check before spending an
    /// argon2 hash on a registration that would fail anyway.
    pub async fn username_taken(&self, username: &str) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users.users WHERE lower(username) = lower($1))",
        )
        .bind(username)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Whether a canonical email is registered.
    pub async fn email_taken(&self, email: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users.users WHERE email = $1)")
                .bind(email)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// A user by id.
    pub async fn user_by_id(&self, id: Uuid) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users.users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A user by username, ignoring case.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users.users WHERE lower(username) = lower($1)"
        )))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A user by canonical email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users.users WHERE email = $1"
        )))
        .bind(email)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every existing user among `ids`, in no particular order.
    pub async fn users_by_ids(&self, ids: &[Uuid]) -> Result<Vec<UserRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users.users WHERE id = ANY($1)"
        )))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The ids among `ids` that exist.
    pub async fn existing_ids(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM users.users WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Users whose lowercased username or nickname starts with `pattern` (a `LIKE`
    /// pattern, lowercased here), ordered by lowercased username, after `after`.
    pub async fn search(
        &self,
        pattern: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UserRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users.users
             WHERE (lower(username) LIKE lower($1) OR lower(nickname) LIKE lower($1))
               AND ($2::text IS NULL OR lower(username) COLLATE \"C\" > $2 COLLATE \"C\")
             ORDER BY lower(username) COLLATE \"C\"
             LIMIT $3"
        )))
        // Planned per call with the pattern's value: a cached generic plan cannot
        // turn `LIKE $1` into a prefix range on the index and scans the whole table.
        .persistent(false)
        .bind(pattern)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sets the given profile fields (others unchanged); `None` when the user is gone.
    pub async fn update_profile(
        &self,
        id: Uuid,
        nickname: Option<&str>,
        avatar: Option<&str>,
        description: Option<&str>,
    ) -> Result<Option<UserRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE users.users
             SET nickname = COALESCE($2, nickname),
                 avatar = COALESCE($3, avatar),
                 description = COALESCE($4, description),
                 updated_at = now()
             WHERE id = $1
             RETURNING {USER_COLUMNS}"
        )))
        .bind(id)
        .bind(nickname)
        .bind(avatar)
        .bind(description)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Replaces a password hash, but only if it is still `expected` (so two concurrent
    /// changes cannot both succeed from the same old password). False otherwise.
    pub async fn replace_password_hash(
        &self,
        id: Uuid,
        expected: &str,
        new_hash: &str,
    ) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE users.users SET password_hash = $3, updated_at = now()
             WHERE id = $1 AND password_hash = $2",
        )
        .bind(id)
        .bind(expected)
        .bind(new_hash)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Stores a new code for `email` unless one was sent less than `resend_secs` ago.
    /// Atomic, so concurrent requests cannot both send. True when stored.
    pub async fn put_code(
        &self,
        email: &str,
        code_hash: &[u8],
        ttl_secs: i64,
        resend_secs: i64,
    ) -> Result<bool> {
        let stored: Option<String> = sqlx::query_scalar(
            "INSERT INTO users.email_codes (email, code_hash, sent_at, expires_at, attempts)
             VALUES ($1, $2, now(), now() + make_interval(secs => $3), 0)
             ON CONFLICT (email) DO UPDATE
                 SET code_hash = EXCLUDED.code_hash,
                     sent_at = EXCLUDED.sent_at,
                     expires_at = EXCLUDED.expires_at,
                     attempts = 0
                 WHERE users.email_codes.sent_at <= now() - make_interval(secs => $4)
             RETURNING email",
        )
        .bind(email)
        .bind(code_hash)
        .bind(ttl_secs as f64)
        .bind(resend_secs as f64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(stored.is_some())
    }

    /// Seconds until another code may be sent to `email` (0 when it may now).
    pub async fn code_retry_after(&self, email: &str, resend_secs: i64) -> Result<i64> {
        let seconds: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (sent_at + make_interval(secs => $2) - now()))::float8
             FROM users.email_codes WHERE email = $1",
        )
        .bind(email)
        .bind(resend_secs as f64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(seconds.map_or(0, |s| s.ceil().max(0.0) as i64))
    }

    /// Forgets the code of `email` (delivery failed: let the user ask again at once).
    pub async fn delete_code(&self, email: &str, code_hash: &[u8]) -> Result<()> {
        sqlx::query("DELETE FROM users.email_codes WHERE email = $1 AND code_hash = $2")
            .bind(email)
            .bind(code_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The code of `email`, locked until the transaction ends so that two
    /// registrations cannot both use it.
    pub async fn lock_code(conn: &mut PgConnection, email: &str) -> Result<Option<CodeRow>> {
        Ok(sqlx::query_as(
            "SELECT code_hash, expires_at <= now() AS expired, attempts
             FROM users.email_codes WHERE email = $1 FOR UPDATE",
        )
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?)
    }

    /// Counts a wrong guess; the code is deleted once `max_attempts` is reached.
    pub async fn record_wrong_code(
        conn: &mut PgConnection,
        email: &str,
        max_attempts: i32,
    ) -> Result<()> {
        let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE users.email_codes SET attempts = attempts + 1
             WHERE email = $1 RETURNING attempts",
        )
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
        if attempts.is_some_and(|n| n >= max_attempts) {
            Self::consume_code(conn, email).await?;
        }
        Ok(())
    }

    /// Removes the code of `email` inside a transaction (used, expired or exhausted).
    pub async fn consume_code(conn: &mut PgConnection, email: &str) -> Result<()> {
        sqlx::query("DELETE FROM users.email_codes WHERE email = $1")
            .bind(email)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Deletes codes that expired more than an hour ago (they only matter for the
    /// resend limit, which is shorter). Returns how many went.
    pub async fn purge_expired_codes(&self) -> Result<u64> {
        let result = sqlx::query(
            "DELETE FROM users.email_codes WHERE expires_at < now() - interval '1 hour'",
        )
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}
