//! The user service's use cases: registration with email codes, credential checks,
//! profiles, password changes. Rules come from [`crate::account`], SQL from
//! [`crate::store`]; this module orders them (cheap checks before argon2, codes consumed
//! in the same transaction that creates the account).

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use beehive_common::{Error, Result};
use chrono::{SubsecRound as _, Utc};
use uuid::Uuid;

use crate::account::{self, Login};
use crate::config::UserConfig;
use crate::password::Passwords;
use crate::store::{Store, Taken, UserRow};
use crate::verification::{self, CODE_TTL, MAX_ATTEMPTS, RESEND_INTERVAL};

/// The message of every failed code check: wrong, expired, used or never sent look
/// alike, so the answer does not help guessing.
const BAD_CODE: &str = "the verification code is wrong or expired";

/// A registration request, already decoded from the wire.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// 3-32 characters of `[A-Za-z0-9_.-]`.
    pub username: String,
    /// 8-128 characters, hashed before storing.
    pub password: String,
    /// Optional address; needs `code` while verification is on.
    pub email: Option<String>,
    /// The 6-digit code mailed to `email`.
    pub code: Option<String>,
    /// Display name; the username when absent.
    pub nickname: Option<String>,
}

/// Profile fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    /// New display name.
    pub nickname: Option<String>,
    /// New avatar URL (empty clears it).
    pub avatar: Option<String>,
    /// New profile text.
    pub description: Option<String>,
}

/// One page of search results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// This page's users, by lowercased username.
    pub users: Vec<UserRow>,
    /// Opaque; empty at the end.
    pub next_cursor: String,
}

/// The user service's state and operations.
#[derive(Clone)]
pub struct UserService {
    store: Store,
    passwords: Passwords,
    config: UserConfig,
}

impl UserService {
    /// Assembles the service.
    pub fn new(store: Store, passwords: Passwords, config: UserConfig) -> Self {
        Self {
            store,
            passwords,
            config,
        }
    }

    /// Sends a fresh code to `email` unless one went there less than a minute ago.
    /// Returns the code's lifetime in seconds.
    pub async fn send_code(&self, email: &str) -> Result<u32> {
        let email = account::normalize_email(email)?;
        let code = verification::new_code();
        let hash = verification::code_hash(&email, &code);
        let resend = RESEND_INTERVAL.as_secs() as i64;
        if !self
            .store
            .put_code(&email, &hash, CODE_TTL.as_secs() as i64, resend)
            .await?
        {
            metrics::counter!("beehive_user_codes_total", "result" => "rate_limited").increment(1);
            let retry = self.store.code_retry_after(&email, resend).await?.max(1);
            return Err(Error::RateLimited {
                message: "a code was sent to this address less than a minute ago".to_owned(),
                retry_after_secs: u32::try_from(retry).unwrap_or(u32::MAX),
            });
        }
        if let Err(error) = self.config.mailer.send_code(&email, &code).await {
            // Nothing was delivered: drop the code so the resend limit does not lock
            // the user out for a minute.
            if let Err(cleanup) = self.store.delete_code(&email, &hash).await {
                tracing::warn!(error = %cleanup, "cannot drop an undelivered code");
            }
            metrics::counter!("beehive_user_codes_total", "result" => "failed").increment(1);
            return Err(error);
        }
        metrics::counter!("beehive_user_codes_total", "result" => "sent").increment(1);
        Ok(CODE_TTL.as_secs() as u32)
    }

    /// Creates an account. With an email (and verification on) the code must match;
    /// it is consumed in the transaction that creates the account, so it works once
    /// and a failed insert (name taken meanwhile) leaves it usable.
    pub async fn register(&self, request: Registration) -> Result<UserRow> {
        account::validate_username(&request.username)?;
        account::validate_password("password", &request.password)?;
        let nickname = match request.nickname.as_deref() {
            Some(n) if !n.trim().is_empty() => {
                account::validate_nickname(n)?;
                n.to_owned()
            }
            _ => request.username.clone(),
        };
        let email = match request.email.as_deref().map(str::trim) {
            Some(e) if !e.is_empty() => Some(account::normalize_email(e)?),
            _ => None,
        };
        let verify = email.is_some() && self.config.email_verification;
        let code = request.code.as_deref().map(str::trim).unwrap_or_default();
        if verify {
            if code.is_empty() {
                return Err(Error::invalid("code", BAD_CODE));
            }
            account::validate_code(code)?;
        }
        // Cheap refusals first: an argon2 hash costs tens of milliseconds.
        if self.store.username_taken(&request.username).await? {
            return Err(Taken::Username.into());
        }
        if let Some(email) = &email
            && self.store.email_taken(email).await?
        {
            return Err(crate::store::Taken::Email.into());
        }
        let password_hash = self.passwords.hash(request.password).await?;
        let user = UserRow {
            id: Uuid::now_v7(),
            username: request.username,
            nickname,
            avatar: String::new(),
            description: String::new(),
            email,
            password_hash,
            // PostgreSQL keeps microseconds; round so the answer equals later reads.
            created_at: Utc::now().trunc_subsecs(6),
        };

        let mut tx = self.store.pool().begin().await?;
        if verify && let Some(email) = &user.email {
            let expected = verification::code_hash(email, code);
            match Store::lock_code(&mut tx, email).await? {
                None => return Err(Error::invalid("code", BAD_CODE)),
                Some(row) if row.expired => {
                    Store::consume_code(&mut tx, email).await?;
                    tx.commit().await?;
                    return Err(Error::invalid("code", BAD_CODE));
                }
                Some(row) if !verification::hashes_equal(&row.code_hash, &expected) => {
                    Store::record_wrong_code(&mut tx, email, MAX_ATTEMPTS).await?;
                    tx.commit().await?;
                    return Err(Error::invalid("code", BAD_CODE));
                }
                Some(_) => Store::consume_code(&mut tx, email).await?,
            }
        }
        if let Err(taken) = Store::insert_user(&mut tx, &user).await? {
            // Rolling back keeps the code for another attempt with another name.
            tx.rollback().await?;
            return Err(taken.into());
        }
        tx.commit().await?;
        metrics::counter!("beehive_user_registrations_total").increment(1);
        tracing::info!(user_id = %user.id, username = %user.username, with_email = user.email.is_some(), "user registered");
        Ok(user)
    }

    /// The account named by `login` (username, email or id) if `password` is its
    /// password. Every failure is the same `unauthenticated`, and costs one argon2
    /// verification whether or not the account exists.
    pub async fn verify_credentials(&self, login: &str, password: &str) -> Result<UserRow> {
        if password.is_empty() || password.chars().count() > account::PASSWORD_MAX {
            return Err(Error::unauthenticated());
        }
        let row = match account::parse_login(login) {
            Some(Login::Id(id)) => self.store.user_by_id(id).await?,
            Some(Login::Email(email)) => self.store.user_by_email(&email).await?,
            Some(Login::Username(name)) => self.store.user_by_username(&name).await?,
            None => None,
        };
        let stored = row.as_ref().map(|r| r.password_hash.clone());
        if !self.passwords.verify(password.to_owned(), stored).await? {
            metrics::counter!("beehive_user_credential_checks_total", "result" => "rejected")
                .increment(1);
            return Err(Error::unauthenticated());
        }
        let Some(row) = row else {
            return Err(Error::unauthenticated());
        };
        metrics::counter!("beehive_user_credential_checks_total", "result" => "accepted")
            .increment(1);
        if self.passwords.needs_rehash(&row.password_hash) {
            self.upgrade_hash(&row, password).await;
        }
        Ok(row)
    }

    /// Stores a hash with the current parameters after a successful login. Best effort:
    /// the login already succeeded.
    async fn upgrade_hash(&self, row: &UserRow, password: &str) {
        let result = async {
            let new_hash = self.passwords.hash(password.to_owned()).await?;
            self.store
                .replace_password_hash(row.id, &row.password_hash, &new_hash)
                .await
        }
        .await;
        match result {
            Ok(_) => {
                tracing::info!(user_id = %row.id, "password hash upgraded to current parameters")
            }
            Err(error) => tracing::warn!(user_id = %row.id, %error, "cannot upgrade password hash"),
        }
    }

    /// One user; `not_found` when absent.
    pub async fn get(&self, id: Uuid) -> Result<UserRow> {
        self.store
            .user_by_id(id)
            .await?
            .ok_or_else(|| Error::NotFound("user not found".to_owned()))
    }

    /// The existing users among `ids`, in request order, each once.
    pub async fn batch_get(&self, ids: &[Uuid]) -> Result<Vec<UserRow>> {
        if ids.len() > account::BATCH_MAX {
            return Err(Error::invalid(
                "user_ids",
                format!("at most {} ids per call", account::BATCH_MAX),
            ));
        }
        let mut seen = HashSet::with_capacity(ids.len());
        let unique: Vec<Uuid> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
        if unique.is_empty() {
            return Ok(Vec::new());
        }
        let mut found: std::collections::HashMap<Uuid, UserRow> = self
            .store
            .users_by_ids(&unique)
            .await?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        Ok(unique.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Users whose username or nickname starts with `query`, ignoring case, by username.
    pub async fn search(&self, query: &str, limit: u32, cursor: &str) -> Result<SearchPage> {
        let pattern = account::search_pattern(query)?;
        let after = decode_cursor(cursor)?;
        let limit = account::page_limit(limit);
        let mut users = self
            .store
            .search(&pattern, after.as_deref(), i64::from(limit) + 1)
            .await?;
        let next_cursor = if users.len() > limit as usize {
            users.truncate(limit as usize);
            users
                .last()
                .map(|u| encode_cursor(&u.username.to_lowercase()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(SearchPage { users, next_cursor })
    }

    /// Changes the given profile fields.
    pub async fn update_profile(&self, id: Uuid, update: ProfileUpdate) -> Result<UserRow> {
        if let Some(n) = &update.nickname {
            account::validate_nickname(n)?;
        }
        if let Some(a) = &update.avatar {
            account::validate_avatar(a)?;
        }
        if let Some(d) = &update.description {
            account::validate_description(d)?;
        }
        self.store
            .update_profile(
                id,
                update.nickname.as_deref(),
                update.avatar.as_deref(),
                update.description.as_deref(),
            )
            .await?
            .ok_or_else(|| Error::NotFound("user not found".to_owned()))
    }

    /// Replaces the password after checking the old one. A wrong old password is
    /// `unauthenticated` (a wrong credential, as at login).
    pub async fn change_password(&self, id: Uuid, old: &str, new: &str) -> Result<()> {
        account::validate_password("new_password", new)?;
        if old.is_empty() || old.chars().count() > account::PASSWORD_MAX {
            return Err(wrong_old_password());
        }
        let row = self
            .store
            .user_by_id(id)
            .await?
            .ok_or_else(|| Error::NotFound("user not found".to_owned()))?;
        if !self
            .passwords
            .verify(old.to_owned(), Some(row.password_hash.clone()))
            .await?
        {
            return Err(wrong_old_password());
        }
        let new_hash = self.passwords.hash(new.to_owned()).await?;
        if !self
            .store
            .replace_password_hash(id, &row.password_hash, &new_hash)
            .await?
        {
            // Another change won the race; the old password is no longer current.
            return Err(wrong_old_password());
        }
        tracing::info!(user_id = %id, "password changed");
        Ok(())
    }

    /// The ids among `ids` that name existing users (duplicates answered once).
    pub async fn existing(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        if ids.len() > account::BATCH_MAX {
            return Err(Error::invalid(
                "user_ids",
                format!("at most {} ids per call", account::BATCH_MAX),
            ));
        }
        let mut seen = HashSet::with_capacity(ids.len());
        let unique: Vec<Uuid> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
        if unique.is_empty() {
            return Ok(Vec::new());
        }
        let existing: HashSet<Uuid> = self
            .store
            .existing_ids(&unique)
            .await?
            .into_iter()
            .collect();
        Ok(unique
            .into_iter()
            .filter(|id| existing.contains(id))
            .collect())
    }

    /// Deletes long-expired codes every `every` until `shutdown` fires.
    pub async fn purge_codes_until(&self, every: Duration, shutdown: beehive_common::Shutdown) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.wait() => return,
            }
            match self.store.purge_expired_codes().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired verification codes purged"),
                Err(error) => tracing::warn!(%error, "cannot purge expired verification codes"),
            }
        }
    }
}

fn wrong_old_password() -> Error {
    Error::Unauthenticated("old_password is wrong".to_owned())
}

/// Longest cursor accepted: a base64 username is far shorter.
const CURSOR_MAX: usize = 128;

fn encode_cursor(username_lower: &str) -> String {
    URL_SAFE_NO_PAD.encode(username_lower.as_bytes())
}

fn decode_cursor(cursor: &str) -> Result<Option<String>> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("cursor", "cursor is not one this server issued");
    if cursor.len() > CURSOR_MAX {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

/// What the API says when a unique index refused an account.
impl From<Taken> for Error {
    fn from(taken: Taken) -> Self {
        match taken {
            Taken::Username => Error::AlreadyExists("the username is already taken".to_owned()),
            Taken::Email => Error::AlreadyExists("the email is already registered".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = encode_cursor("alice.b");
        assert_eq!(
            decode_cursor(&cursor).expect("ok").as_deref(),
            Some("alice.b")
        );
        assert_eq!(decode_cursor("").expect("empty"), None);
        assert!(decode_cursor("***").is_err());
        assert!(decode_cursor(&"A".repeat(200)).is_err());
    }
}
