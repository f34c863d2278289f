//! The auth service's use cases: opening sessions (register, login), rotating refresh
//! tokens with reuse detection, ending sessions, and answering gateways (keys,
//! revoked sessions, token validation).

use beehive_common::grpc::Retry;
use beehive_common::{Error, Result};
use beehive_proto::v1 as pb;
use uuid::Uuid;

use crate::config::AuthConfig;
use crate::revocation::Publisher;
use crate::session::{ClientInfo, Reason, Revoked};
use crate::store::{RevokedRow, Store};
use crate::token::{self, Tokens, Verified};
use crate::user_client::UserClient;

/// Longest login string forwarded to the user service.
const LOGIN_MAX: usize = 254;
/// Longest password forwarded; the user service allows 128 characters (up to 512 bytes).
const PASSWORD_MAX_BYTES: usize = 1024;
/// Margin added to the access-token TTL when listing revocations, so a gateway whose
/// clock or reload lags slightly still learns every revocation that matters.
const REVOKED_LIST_MARGIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Tokens handed to a client.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The account (Register and Login only).
    pub user: Option<pb::User>,
    /// The signed JWT.
    pub access_token: String,
    /// The opaque refresh token; only its hash is stored.
    pub refresh_token: String,
    /// Access-token lifetime in seconds.
    pub expires_in: u32,
    /// The session both tokens belong to.
    pub session_id: Uuid,
}

/// The auth service's state and operations.
#[derive(Clone)]
pub struct AuthService {
    store: Store,
    tokens: Tokens,
    publisher: Publisher,
    users: UserClient,
    retry: Retry,
    config: AuthConfig,
}

impl AuthService {
    /// Assembles the service.
    pub fn new(
        store: Store,
        tokens: Tokens,
        publisher: Publisher,
        users: UserClient,
        config: AuthConfig,
    ) -> Self {
        Self {
            store,
            tokens,
            publisher,
            users,
            retry: Retry::default(),
            config,
        }
    }

    /// The token signer/verifier.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Creates the account through the user service, then opens a session.
    pub async fn register(
        &self,
        request: pb::RegisterUserRequest,
        client: ClientInfo,
    ) -> Result<Issued> {
        // Not idempotent (a retry after a lost answer would say "username taken"), so
        // no retries here.
        let mut users = self.users.clone();
        let user = users
            .register(request)
            .await
            .map_err(|s| Error::from_status(&s))?
            .into_inner()
            .user
            .ok_or_else(|| Error::internal("user service answered Register without a user"))?;
        self.open_session(user, client).await
    }

    /// Checks credentials through the user service, then opens a session.
    pub async fn login(&self, login: &str, password: &str, client: ClientInfo) -> Result<Issued> {
        if login.is_empty() || login.len() > LOGIN_MAX || password.len() > PASSWORD_MAX_BYTES {
            return Err(Error::unauthenticated());
        }
        let request = pb::VerifyCredentialsRequest {
            login: login.to_owned(),
            password: password.to_owned(),
        };
        let user = self
            .retry
            .idempotent(|| {
                let mut users = self.users.clone();
                let request = request.clone();
                async move { users.verify_credentials(request).await }
            })
            .await
            .map_err(|s| Error::from_status(&s))?
            .into_inner()
            .user
            .ok_or_else(|| {
                Error::internal("user service answered VerifyCredentials without a user")
            })?;
        self.open_session(user, client).await
    }

    async fn open_session(&self, user: pb::User, client: ClientInfo) -> Result<Issued> {
        let user_id = Uuid::parse_str(&user.id)
            .map_err(|_| Error::internal("user service returned a malformed user id"))?;
        let session_id = Uuid::now_v7();
        let refresh = token::new_refresh_token();
        self.store
            .create_session(
                session_id,
                user_id,
                &token::refresh_token_hash(&refresh),
                self.config.refresh_token_ttl,
                &client,
            )
            .await?;
        let access = self.tokens.issue(user_id, session_id)?;
        metrics::counter!("beehive_auth_sessions_opened_total").increment(1);
        tracing::info!(%user_id, %session_id, "session opened");
        Ok(Issued {
            user: Some(user),
            access_token: access.token,
            refresh_token: refresh,
            expires_in: self.expires_in(),
            session_id,
        })
    }

    fn expires_in(&self) -> u32 {
        u32::try_from(self.tokens.ttl().as_secs()).unwrap_or(u32::MAX)
    }

    /// Rotates a refresh token. A token that was already rotated means it leaked (or a
    /// client raced itself): the whole session is revoked (`session_revoked`).
    pub async fn refresh(&self, refresh_token: &str, client: ClientInfo) -> Result<Issued> {
        if !token::plausible_refresh_token(refresh_token) {
            return Err(Error::unauthenticated());
        }
        let old = token::refresh_token_hash(refresh_token);
        let mut tx = self.store.pool().begin().await?;
        let Some(row) = Store::lock_refresh(&mut tx, &old).await? else {
            metrics::counter!("beehive_auth_refreshes_total", "result" => "unknown").increment(1);
            return Err(Error::unauthenticated());
        };
        if row.revoked || row.expired {
            metrics::counter!("beehive_auth_refreshes_total", "result" => "ended").increment(1);
            return Err(Error::unauthenticated());
        }
        if row.rotated {
            let revoked =
                Store::revoke_session(&mut tx, row.session_id, None, Reason::SessionRevoked)
                    .await?;
            tx.commit().await?;
            metrics::counter!("beehive_auth_refreshes_total", "result" => "reused").increment(1);
            tracing::warn!(session_id = %row.session_id, user_id = %row.user_id, "rotated refresh token presented again: session revoked");
            self.publisher.announce(revoked).await;
            return Err(Error::unauthenticated());
        }
        let new = token::new_refresh_token();
        Store::rotate_refresh(
            &mut tx,
            row.session_id,
            &old,
            &token::refresh_token_hash(&new),
            self.config.refresh_token_ttl,
            &client,
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("beehive_auth_refreshes_total", "result" => "rotated").increment(1);
        let access = self.tokens.issue(row.user_id, row.session_id)?;
        Ok(Issued {
            user: None,
            access_token: access.token,
            refresh_token: new,
            expires_in: self.expires_in(),
            session_id: row.session_id,
        })
    }

    /// Ends the caller's session. Logging out twice is fine; a session of another user
    /// (or none) is `not_found`, so sessions cannot be probed.
    pub async fn logout(&self, session_id: Uuid, user_id: Uuid) -> Result<()> {
        let mut conn = self.store.pool().acquire().await?;
        let revoked =
            Store::revoke_session(&mut conn, session_id, Some(user_id), Reason::Logout).await?;
        drop(conn);
        if revoked.is_empty() {
            return match self.store.session_state(session_id).await? {
                Some(state) if state.user_id == user_id => Ok(()),
                _ => Err(Error::NotFound("session not found".to_owned())),
            };
        }
        self.publisher.announce(revoked).await;
        Ok(())
    }

    /// Changes the password through the user service, then revokes every other session
    /// of the user (`password_changed`). Returns how many were revoked.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        old_password: String,
        new_password: String,
    ) -> Result<u32> {
        let mut users = self.users.clone();
        users
            .change_password(pb::ChangePasswordRequest {
                user_id: user_id.to_string(),
                old_password,
                new_password,
            })
            .await
            .map_err(|s| Error::from_status(&s))?;
        let revoked = self
            .store
            .revoke_user_sessions(user_id, keep, Reason::PasswordChanged)
            .await?;
        let count = revoked.len();
        self.publisher.announce(revoked).await;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Revokes one session.
    pub async fn revoke_session(&self, session_id: Uuid, reason: Reason) -> Result<u32> {
        let mut conn = self.store.pool().acquire().await?;
        let revoked = Store::revoke_session(&mut conn, session_id, None, reason).await?;
        drop(conn);
        Ok(self.announce_counted(revoked).await)
    }

    /// Revokes every session of a user except `keep`.
    pub async fn revoke_user(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: Reason,
    ) -> Result<u32> {
        let revoked = self
            .store
            .revoke_user_sessions(user_id, keep, reason)
            .await?;
        Ok(self.announce_counted(revoked).await)
    }

    async fn announce_counted(&self, revoked: Vec<Revoked>) -> u32 {
        let count = revoked.len();
        self.publisher.announce(revoked).await;
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Sessions revoked recently enough that some of their access tokens may live.
    pub async fn recently_revoked(&self) -> Result<Vec<RevokedRow>> {
        self.store
            .revoked_within(self.tokens.ttl() + REVOKED_LIST_MARGIN)
            .await
    }

    /// Verifies a token and checks that its session is not revoked (PostgreSQL, the
    /// source of truth, so this holds across Redis restarts).
    pub async fn validate(&self, access_token: &str) -> Result<Verified> {
        let verified = self.tokens.verify(access_token)?;
        match self.store.session_state(verified.session_id).await? {
            Some(state) if !state.revoked && state.user_id == verified.user_id => Ok(verified),
            _ => Err(Error::unauthenticated()),
        }
    }

    /// Deletes ended sessions every purge interval until `shutdown` fires.
    pub async fn purge_until(&self, shutdown: beehive_common::Shutdown) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.purge_interval) => {}
                () = shutdown.wait() => return,
            }
            match self
                .store
                .purge_ended_sessions(self.config.keep_ended_sessions)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "ended sessions purged"),
                Err(error) => tracing::warn!(%error, "cannot purge ended sessions"),
            }
        }
    }
}
