//! Every SQL statement of the auth service (schema `auth`), nothing else.

use std::time::Duration;

use beehive_common::Result;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::session::{ClientInfo, Reason, Revoked};

/// A row of `auth.signing_keys`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    /// The key's JWK thumbprint.
    pub kid: String,
    /// PKCS#8 DER.
    pub private_key: Vec<u8>,
    /// Raw 32 bytes.
    pub public_key: Vec<u8>,
    /// When it was generated.
    pub created_at: DateTime<Utc>,
    /// Whether new tokens are signed with it.
    pub active: bool,
}

/// A refresh token and its session, as read under lock by Refresh.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshRow {
    /// The token's session.
    pub session_id: Uuid,
    /// The session's user.
    pub user_id: Uuid,
    /// Already exchanged once: presenting it again is reuse.
    pub rotated: bool,
    /// Past its expiry.
    pub expired: bool,
    /// The session was revoked.
    pub revoked: bool,
}

/// A session's owner and whether it still lives.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionState {
    /// The session's user.
    pub user_id: Uuid,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A revoked session, for ListRevokedSessions.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevokedRow {
    /// The session id.
    pub id: Uuid,
    /// The session's user.
    pub user_id: Uuid,
    /// `logout`, `password_changed` or `session_revoked`.
    pub revoked_reason: String,
    /// When it was revoked.
    pub revoked_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RevokedIds {
    id: Uuid,
    user_id: Uuid,
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
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

    /// Every stored signing key.
    pub async fn signing_keys(&self) -> Result<Vec<KeyRow>> {
        Ok(sqlx::query_as(
            "SELECT kid, private_key, public_key, created_at, active
             FROM auth.signing_keys ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The active signing key, if any.
    pub async fn active_key(&self) -> Result<Option<KeyRow>> {
        Ok(sqlx::query_as(
            "SELECT kid, private_key, public_key, created_at, active
             FROM auth.signing_keys WHERE active",
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Offers a key as the active one. False when another is active already (the
    /// one-active index refuses it): read [`Store::active_key`] to learn the winner.
    pub async fn insert_active_key(
        &self,
        kid: &str,
        algorithm: &str,
        private_key: &[u8],
        public_key: &[u8],
    ) -> Result<bool> {
        let result = sqlx::query(
            "INSERT INTO auth.signing_keys (kid, algorithm, private_key, public_key, active)
             VALUES ($1, $2, $3, $4, true)
             ON CONFLICT DO NOTHING",
        )
        .bind(kid)
        .bind(algorithm)
        .bind(private_key)
        .bind(public_key)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Opens a session with its first refresh token, in one statement.
    pub async fn create_session(
        &self,
        session_id: Uuid,
        user_id: Uuid,
        refresh_hash: &[u8; 32],
        refresh_ttl: Duration,
        client: &ClientInfo,
    ) -> Result<()> {
        sqlx::query(
            "WITH session AS (
                 INSERT INTO auth.sessions (id, user_id, expires_at, ip, user_agent)
                 VALUES ($1, $2, now() + make_interval(secs => $4), $5, $6)
                 RETURNING id, expires_at
             )
             INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
             SELECT $3, id, expires_at FROM session",
        )
        .bind(session_id)
        .bind(user_id)
        .bind(refresh_hash.as_slice())
        .bind(secs(refresh_ttl))
        .bind(&client.ip)
        .bind(&client.user_agent)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The refresh token with this hash and its session, both locked until the
    /// transaction ends (so concurrent refreshes and revocations serialise).
    pub async fn lock_refresh(
        conn: &mut PgConnection,
        refresh_hash: &[u8; 32],
    ) -> Result<Option<RefreshRow>> {
        Ok(sqlx::query_as(
            "SELECT t.session_id, s.user_id,
                    t.rotated_at IS NOT NULL AS rotated,
                    t.expires_at <= now() AS expired,
                    s.revoked_at IS NOT NULL AS revoked
             FROM auth.refresh_tokens t
             JOIN auth.sessions s ON s.id = t.session_id
             WHERE t.token_hash = $1
             FOR UPDATE OF t, s",
        )
        .bind(refresh_hash.as_slice())
        .fetch_optional(&mut *conn)
        .await?)
    }

    /// Marks `old` rotated, adds `new` and extends the session, in one statement.
    pub async fn rotate_refresh(
        conn: &mut PgConnection,
        session_id: Uuid,
        old: &[u8; 32],
        new: &[u8; 32],
        refresh_ttl: Duration,
        client: &ClientInfo,
    ) -> Result<()> {
        sqlx::query(
            "WITH rotated AS (
                 UPDATE auth.refresh_tokens SET rotated_at = now() WHERE token_hash = $2
             ), session AS (
                 UPDATE auth.sessions
                 SET last_used_at = now(),
                     expires_at = now() + make_interval(secs => $4),
                     ip = CASE WHEN $5 = '' THEN ip ELSE $5 END,
                     user_agent = CASE WHEN $6 = '' THEN user_agent ELSE $6 END
                 WHERE id = $1
             )
             INSERT INTO auth.refresh_tokens (token_hash, session_id, expires_at)
             VALUES ($3, $1, now() + make_interval(secs => $4))",
        )
        .bind(session_id)
        .bind(old.as_slice())
        .bind(new.as_slice())
        .bind(secs(refresh_ttl))
        .bind(&client.ip)
        .bind(&client.user_agent)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Revokes one live session (optionally only if `owner` owns it). Returns it when
    /// this call revoked it; nothing when it was already revoked or is not `owner`'s.
    pub async fn revoke_session(
        conn: &mut PgConnection,
        session_id: Uuid,
        owner: Option<Uuid>,
        reason: Reason,
    ) -> Result<Vec<Revoked>> {
        let rows: Vec<RevokedIds> = sqlx::query_as(
            "UPDATE auth.sessions SET revoked_at = now(), revoked_reason = $3
             WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2) AND revoked_at IS NULL
             RETURNING id, user_id",
        )
        .bind(session_id)
        .bind(owner)
        .bind(reason.as_str())
        .fetch_all(&mut *conn)
        .await?;
        Ok(revoked(rows, reason))
    }

    /// Revokes every live session of a user except `keep`. Returns those revoked.
    pub async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: Reason,
    ) -> Result<Vec<Revoked>> {
        let rows: Vec<RevokedIds> = sqlx::query_as(
            "UPDATE auth.sessions SET revoked_at = now(), revoked_reason = $3
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
               AND ($2::uuid IS NULL OR id <> $2)
             RETURNING id, user_id",
        )
        .bind(user_id)
        .bind(keep)
        .bind(reason.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(revoked(rows, reason))
    }

    /// Who owns a session and whether it was revoked.
    pub async fn session_state(&self, session_id: Uuid) -> Result<Option<SessionState>> {
        Ok(sqlx::query_as(
            "SELECT user_id, revoked_at IS NOT NULL AS revoked
             FROM auth.sessions WHERE id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Sessions revoked within `window`.
    pub async fn revoked_within(&self, window: Duration) -> Result<Vec<RevokedRow>> {
        Ok(sqlx::query_as(
            "SELECT id, user_id, revoked_reason, revoked_at FROM auth.sessions
             WHERE revoked_at > now() - make_interval(secs => $1)
             ORDER BY revoked_at",
        )
        .bind(secs(window))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes sessions (and their refresh tokens) that ended more than `keep` ago.
    pub async fn purge_ended_sessions(&self, keep: Duration) -> Result<u64> {
        let result = sqlx::query(
            "DELETE FROM auth.sessions
             WHERE expires_at < now() - make_interval(secs => $1)
                OR revoked_at < now() - make_interval(secs => $1)",
        )
        .bind(secs(keep))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected())
    }
}

fn revoked(rows: Vec<RevokedIds>, reason: Reason) -> Vec<Revoked> {
    rows.into_iter()
        .map(|r| Revoked {
            session_id: r.id,
            user_id: r.user_id,
            reason,
        })
        .collect()
}
