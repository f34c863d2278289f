//! Local verification of access tokens.
//!
//! Every REST request and WebSocket upgrade carries an access token; asking auth about
//! each one would put auth on the hot path of the whole system. Instead the gateway
//! keeps auth's public Ed25519 keys (from `ListSigningKeys`, cached by `kid`) and
//! verifies signatures itself, and keeps a deny set of revoked sessions: loaded with
//! `ListRevokedSessions` whenever the Redis subscription (re)connects, and updated
//! from the Redis channel `<installation>:auth:revocations` that auth publishes to.
//! A revoked session stays denied for one access-token lifetime, after which every
//! token it ever had has expired anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use beehive_common::{Error, Settings, Shutdown};
use beehive_proto::v1::RevocationReason;
use beehive_proto::v1::auth_service_client::AuthServiceClient;
use beehive_proto::v1::{ListRevokedSessionsRequest, ListSigningKeysRequest};
use futures::StreamExt;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::broadcast;

use beehive_common::grpc::ClientChannel;

/// Tokens longer than this are rejected before any parsing: ours are ~300 bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// At most one key refetch per this interval, so a flood of tokens with made-up `kid`s
/// cannot turn into a flood of calls to auth.
const KEY_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Keys are also refreshed on this period, so a rotated key is usually known before
/// the first token signed with it arrives.
const KEY_REFRESH_PERIOD: Duration = Duration::from_secs(300);
/// The deny list is reloaded from auth on this period as a safety net in case a
/// published revocation was lost without the subscription noticing.
const DENY_RELOAD_PERIOD: Duration = Duration::from_secs(300);
/// How often the Redis subscription is pinged to detect a half-open connection.
const PUBSUB_PING_PERIOD: Duration = Duration::from_secs(15);
/// Extra time a revoked session stays denied beyond the access-token lifetime, to
/// absorb clock differences between auth and gateways.
const DENY_SLACK: Duration = Duration::from_secs(60);
/// Revocation payloads larger than this are ignored (ours are ~120 bytes).
const MAX_REVOCATION_PAYLOAD: usize = 1024;
/// Buffered revocations per subscriber of [`TokenVerifier::subscribe`].
const REVOCATION_CHANNEL_CAPACITY: usize = 4096;

/// What a verified access token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The user the token was issued to (`sub`).
    pub user_id: String,
    /// The session (login) the token belongs to (`sid`); revocation works per session.
    pub session_id: String,
    /// Unix seconds after which the token is no longer valid (`exp`).
    pub expires_at: i64,
}

/// A session that was just revoked, for closing its WebSockets.
#[derive(Clone, Debug)]
pub struct Revocation {
    pub session_id: String,
    pub user_id: String,
    pub reason: RevocationReason,
}

/// The JSON auth publishes on the revocation channel.
#[derive(Debug, serde::Deserialize)]
struct RevocationMessage {
    session_id: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    reason: String,
}

/// Parses the `reason` string auth publishes (also the `kicked` frame's reason).
pub fn parse_reason(reason: &str) -> RevocationReason {
    match reason {
        "logout" => RevocationReason::Logout,
        "password_changed" => RevocationReason::PasswordChanged,
        _ => RevocationReason::SessionRevoked,
    }
}

/// The JWT claims we read; anything else in the token is ignored.
#[derive(Debug, serde::Deserialize)]
struct JwtClaims {
    sub: String,
    sid: String,
    exp: i64,
}

/// Verifies access tokens locally; see the module docs.
pub struct TokenVerifier {
    keys: RwLock<HashMap<String, DecodingKey>>,
    /// Revoked session id -> when the entry may be forgotten.
    denied: RwLock<HashMap<String, Instant>>,
    /// False until the deny set was loaded once: before that, a revoked session's
    /// token would pass, so verification answers `unavailable` instead.
    deny_loaded: AtomicBool,
    validation: Validation,
    access_ttl: Duration,
    auth: AuthServiceClient<ClientChannel>,
    /// Serialises key fetches and remembers when the last one ran (rate limit).
    key_fetch: tokio::sync::Mutex<Option<Instant>>,
    revocations: broadcast::Sender<Revocation>,
}

impl TokenVerifier {
    /// A verifier with no keys and no deny set yet. Nothing is fetched here; call
    /// [`TokenVerifier::start`] (or [`TokenVerifier::refresh_keys`] and
    /// [`TokenVerifier::reload_denied`]) to fill it.
    pub fn new(auth: AuthServiceClient<ClientChannel>, access_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Auth and gateways share the cluster's clock; an expired token is expired.
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp", "sub"].into_iter().map(String::from).collect();
        let (revocations, _) = broadcast::channel(REVOCATION_CHANNEL_CAPACITY);
        Self {
            keys: RwLock::new(HashMap::new()),
            denied: RwLock::new(HashMap::new()),
            deny_loaded: AtomicBool::new(false),
            validation,
            access_ttl,
            auth,
            key_fetch: tokio::sync::Mutex::new(None),
            revocations,
        }
    }

    /// Builds a verifier and starts its background task: it loads keys and the deny
    /// set without blocking the caller (auth may not be serving yet when the gateway
    /// binds), then follows the Redis revocation channel until `shutdown`.
    pub fn start(
        settings: &Settings,
        auth: AuthServiceClient<ClientChannel>,
        shutdown: &Shutdown,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(settings.redis_url.expose())?;
        let verifier = Arc::new(Self::new(auth, settings.access_token_ttl));
        let channel = settings.prefixed("auth:revocations");
        tokio::spawn(follow_revocations(
            verifier.clone(),
            client,
            channel,
            shutdown.clone(),
        ));
        tokio::spawn(refresh_keys_periodically(
            verifier.clone(),
            shutdown.clone(),
        ));
        Ok(verifier)
    }

    /// Verifies `token` and returns its claims. `unauthenticated` on any failure of the
    /// token itself (malformed, bad signature, unknown key, expired, revoked);
    /// `unavailable` while the deny set has not been loaded yet.
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        match self.check(token) {
            Ok(claims) => Ok(claims),
            Err(Failure::UnknownKey) | Err(Failure::Invalid) => Err(Error::unauthenticated()),
            Err(Failure::NotReady) => Err(not_ready()),
        }
    }

    /// Like [`TokenVerifier::verify`], but a token signed with a key this gateway does
    /// not know yet triggers one (rate-limited) key refetch before it is rejected.
    /// Use it where awaiting is possible (REST, WebSocket upgrade).
    pub async fn verify_fresh(&self, token: &str) -> Result<Claims, Error> {
        match self.check(token) {
            Ok(claims) => Ok(claims),
            Err(Failure::UnknownKey) => {
                if self.refetch_keys_rate_limited().await {
                    self.verify(token)
                } else {
                    Err(Error::unauthenticated())
                }
            }
            Err(Failure::Invalid) => Err(Error::unauthenticated()),
            Err(Failure::NotReady) => Err(not_ready()),
        }
    }

    /// Revocations as they arrive (from Redis, or found by a deny-set reload). A
    /// receiver that falls more than a few thousand behind gets `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }

    /// Whether keys and the deny set are loaded (readiness).
    pub fn is_ready(&self) -> bool {
        self.deny_loaded.load(Ordering::Acquire) && !self.read_keys().is_empty()
    }

    fn check(&self, token: &str) -> Result<Claims, Failure> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Failure::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(Failure::Invalid);
        }
        let kid = header.kid.ok_or(Failure::Invalid)?;
        let data = {
            let keys = self.read_keys();
            let key = keys.get(&kid).ok_or(Failure::UnknownKey)?;
            jsonwebtoken::decode::<JwtClaims>(token, key, &self.validation)
                .map_err(|_| Failure::Invalid)?
        };
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sid.is_empty() {
            return Err(Failure::Invalid);
        }
        if !self.deny_loaded.load(Ordering::Acquire) {
            return Err(Failure::NotReady);
        }
        if self.is_denied(&claims.sid) {
            return Err(Failure::Invalid);
        }
        Ok(Claims {
            user_id: claims.sub,
            session_id: claims.sid,
            expires_at: claims.exp,
        })
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, DecodingKey>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the session is revoked.
    pub fn is_denied(&self, session_id: &str) -> bool {
        let denied = self.denied.read().unwrap_or_else(|e| e.into_inner());
        denied
            .get(session_id)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Adds a revocation; returns whether it was new. New ones are broadcast to
    /// [`TokenVerifier::subscribe`]rs.
    pub fn deny(&self, revocation: Revocation, until: Instant) -> bool {
        let new = {
            let mut denied = self.denied.write().unwrap_or_else(|e| e.into_inner());
            match denied.get_mut(&revocation.session_id) {
                Some(existing) => {
                    *existing = (*existing).max(until);
                    false
                }
                None => {
                    denied.insert(revocation.session_id.clone(), until);
                    true
                }
            }
        };
        if new {
            tracing::info!(
                session_id = %revocation.session_id,
                user_id = %revocation.user_id,
                reason = revocation.reason.as_str_name(),
                "session revoked"
            );
            // No receivers is fine: nobody holds a socket of that session here.
            let _ = self.revocations.send(revocation);
        }
        new
    }

    /// Forgets revocations whose tokens have all expired.
    fn prune_denied(&self) {
        let now = Instant::now();
        let mut denied = self.denied.write().unwrap_or_else(|e| e.into_inner());
        denied.retain(|_, until| *until > now);
    }

    /// How long a revocation made `age` ago must still be enforced.
    fn deny_until(&self, age: Duration) -> Instant {
        Instant::now() + (self.access_ttl + DENY_SLACK).saturating_sub(age)
    }

    /// Fetches the signing keys from auth and replaces the cache.
    pub async fn refresh_keys(&self) -> Result<usize, Error> {
        let mut auth = self.auth.clone();
        let response = auth
            .list_signing_keys(ListSigningKeysRequest {})
            .await
            .map_err(|status| Error::from_status(&status))?
            .into_inner();
        let mut keys = HashMap::with_capacity(response.keys.len());
        for key in response.keys {
            // jsonwebtoken slices the first 32 bytes without checking: guard here.
            if key.algorithm != "EdDSA" || key.public_key.len() != 32 || key.kid.is_empty() {
                tracing::warn!(kid = %key.kid, algorithm = %key.algorithm, "ignoring unusable signing key");
                continue;
            }
            keys.insert(key.kid, DecodingKey::from_ed_der(&key.public_key));
        }
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        tracing::debug!(keys = count, "signing keys loaded");
        Ok(count)
    }

    /// Refetches keys unless a fetch ran within [`KEY_REFETCH_INTERVAL`]; returns
    /// whether a fetch ran and succeeded. Concurrent callers wait for one fetch.
    async fn refetch_keys_rate_limited(&self) -> bool {
        let mut last = self.key_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < KEY_REFETCH_INTERVAL) {
            // Someone fetched just now (maybe while we waited for the lock).
            return true;
        }
        *last = Some(Instant::now());
        match self.refresh_keys().await {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot refetch signing keys");
                false
            }
        }
    }

    /// Reloads every revoked session from auth (the source of truth); newly found ones
    /// are broadcast so their sockets are closed.
    pub async fn reload_denied(&self) -> Result<usize, Error> {
        let mut auth = self.auth.clone();
        let response = auth
            .list_revoked_sessions(ListRevokedSessionsRequest {})
            .await
            .map_err(|status| Error::from_status(&status))?
            .into_inner();
        let now = std::time::SystemTime::now();
        let count = response.sessions.len();
        for session in response.sessions {
            let age = session
                .revoked_at
                .and_then(|t| std::time::SystemTime::try_from(t).ok())
                .and_then(|at| now.duration_since(at).ok())
                .unwrap_or_default();
            let until = self.deny_until(age);
            let reason = RevocationReason::try_from(session.reason)
                .unwrap_or(RevocationReason::SessionRevoked);
            self.deny(
                Revocation {
                    session_id: session.session_id,
                    user_id: session.user_id,
                    reason,
                },
                until,
            );
        }
        self.prune_denied();
        self.deny_loaded.store(true, Ordering::Release);
        tracing::debug!(revoked = count, "revoked sessions loaded");
        Ok(count)
    }

    /// Applies one message of the revocation channel.
    pub fn apply_revocation_payload(&self, payload: &[u8]) -> Result<(), Error> {
        if payload.len() > MAX_REVOCATION_PAYLOAD {
            return Err(Error::bad_request("revocation payload too large"));
        }
        let message: RevocationMessage = serde_json::from_slice(payload)
            .map_err(|e| Error::bad_request(format!("bad revocation payload: {e}")))?;
        if message.session_id.is_empty() || message.session_id.len() > 64 {
            return Err(Error::bad_request("revocation without a valid session_id"));
        }
        self.deny(
            Revocation {
                session_id: message.session_id,
                user_id: message.user_id,
                reason: parse_reason(&message.reason),
            },
            self.deny_until(Duration::ZERO),
        );
        Ok(())
    }
}

enum Failure {
    Invalid,
    UnknownKey,
    NotReady,
}

fn not_ready() -> Error {
    Error::Unavailable("authentication is starting, retry shortly".to_owned())
}

/// Loads keys at start and on a period.
async fn refresh_keys_periodically(verifier: Arc<TokenVerifier>, shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let wait = match verifier.refresh_keys().await {
            Ok(_) => {
                backoff = Duration::from_millis(100);
                KEY_REFRESH_PERIOD
            }
            Err(error) => {
                tracing::warn!(%error, "cannot load signing keys from auth; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                backoff
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// Subscribes to the revocation channel, (re)loads the deny set after every
/// (re)subscription, and keeps doing so across Redis restarts until shutdown. While
/// Redis is unreachable the deny set is reloaded from auth on every retry, so
/// revocations still take effect within seconds.
async fn follow_revocations(
    verifier: Arc<TokenVerifier>,
    client: redis::Client,
    channel: String,
    shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if shutdown.is_triggered() {
            return;
        }
        let mut subscribed = false;
        match subscribe_once(&verifier, &client, &channel, &shutdown, &mut subscribed).await {
            Ok(()) => return, // shutdown
            Err(error) => {
                tracing::warn!(%error, channel = %channel, "revocation subscription lost; reconnecting");
            }
        }
        if subscribed {
            // A connection that worked and then broke: retry quickly.
            backoff = Duration::from_millis(100);
        }
        if let Err(error) = verifier.reload_denied().await {
            tracing::warn!(%error, "cannot load revoked sessions");
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.wait() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One subscription's life. Returns `Ok` on shutdown and `Err` when the connection or
/// a reload failed (the caller reconnects).
async fn subscribe_once(
    verifier: &TokenVerifier,
    client: &redis::Client,
    channel: &str,
    shutdown: &Shutdown,
    subscribed: &mut bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let pubsub = client.get_async_pubsub().await?;
    let (mut sink, mut stream) = pubsub.split();
    sink.subscribe(channel).await?;
    *subscribed = true;
    // Subscribed first, then loaded: a revocation published in between is seen twice
    // (harmless) instead of never.
    let mut attempts = 0;
    loop {
        match verifier.reload_denied().await {
            Ok(_) => break,
            Err(error) if attempts < 50 => {
                attempts += 1;
                tracing::warn!(%error, "cannot load revoked sessions from auth; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = shutdown.wait() => return Ok(()),
                }
            }
            Err(error) => return Err(Box::new(error)),
        }
    }
    tracing::info!(channel = %channel, "following session revocations");
    let mut ping = tokio::time::interval(PUBSUB_PING_PERIOD);
    ping.reset();
    let mut reload = tokio::time::interval(DENY_RELOAD_PERIOD);
    reload.reset();
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return Err("redis closed the subscription".into());
                };
                if let Err(error) = verifier.apply_revocation_payload(message.get_payload_bytes()) {
                    tracing::warn!(%error, "ignoring revocation message");
                }
            }
            _ = ping.tick() => {
                // In subscriber mode Redis answers PING with ["pong", ""], not a string:
                // accept any reply, only its absence means the connection is gone.
                let pong =
                    tokio::time::timeout(Duration::from_secs(5), sink.ping::<redis::Value>()).await;
                match pong {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(Box::new(error)),
                    Err(_) => return Err("redis ping timed out".into()),
                }
            }
            _ = reload.tick() => {
                if let Err(error) = verifier.reload_denied().await {
                    tracing::warn!(%error, "periodic reload of revoked sessions failed");
                }
            }
            () = shutdown.wait() => return Ok(()),
        }
    }
}

/// The authenticated caller of a REST handler, from `Authorization: Bearer <token>`.
#[derive(Clone, Debug)]
pub struct AuthUser(pub Claims);

/// Where extractors find the verifier.
pub trait HasVerifier {
    /// The gateway's verifier.
    fn verifier(&self) -> &Arc<TokenVerifier>;
}

/// The token of an `Authorization: Bearer` header, if well-formed.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl<S> FromRequestParts<S> for AuthUser
where
    S: HasVerifier + Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(parts).ok_or_else(Error::unauthenticated)?;
        let claims = state.verifier().verify_fresh(token).await?;
        tracing::Span::current().record("user_id", claims.user_id.as_str());
        Ok(AuthUser(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_to_the_enum() {
        assert_eq!(parse_reason("logout"), RevocationReason::Logout);
        assert_eq!(
            parse_reason("password_changed"),
            RevocationReason::PasswordChanged
        );
        assert_eq!(
            parse_reason("session_revoked"),
            RevocationReason::SessionRevoked
        );
        assert_eq!(parse_reason("other"), RevocationReason::SessionRevoked);
    }

    #[test]
    fn bearer_tokens_are_extracted_case_insensitively() {
        let request = axum::http::Request::builder()
            .header("authorization", "bEaReR abc.def.ghi")
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        assert_eq!(bearer_token(&parts), Some("abc.def.ghi"));
        let request = axum::http::Request::builder()
            .header("authorization", "Basic abc")
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        assert_eq!(bearer_token(&parts), None);
    }
}
