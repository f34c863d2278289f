//! Telling gateways about revoked sessions.
//!
//! PostgreSQL holds the truth (`auth.sessions.revoked_at`). After a revocation commits,
//! one pipelined Redis round trip per batch sets `<installation>:auth:revoked:<sid>`
//! (value: the reason, TTL: the access-token TTL, after which every token of the
//! session has expired anyway) and PUBLISHes `{"session_id","user_id","reason"}` on
//! `<installation>:auth:revocations`, which every gateway follows. A gateway that
//! missed messages (restart, Redis restart) rebuilds its deny list from
//! ListRevokedSessions, so a failed publish delays a kick but never loses a revocation;
//! failed publishes are still retried in the background to keep that delay short.

use std::time::Duration;

use beehive_common::Settings;
use redis::aio::ConnectionManager;

use crate::session::{RevocationMessage, Revoked};

/// Background retries of a failed publish, with their delays.
const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(4),
    Duration::from_secs(15),
];

/// Publishes revocations to Redis.
#[derive(Clone)]
pub struct Publisher {
    redis: ConnectionManager,
    key_prefix: String,
    channel: String,
    ttl_secs: u64,
}

impl Publisher {
    /// The channel gateways follow: `<installation>:auth:revocations`.
    pub fn channel(settings: &Settings) -> String {
        settings.prefixed("auth:revocations")
    }

    /// The cache key of a revoked session: `<installation>:auth:revoked:<sid>`.
    pub fn key(settings: &Settings, session_id: &str) -> String {
        settings.prefixed(&format!("auth:revoked:{session_id}"))
    }

    /// A publisher for this installation; cache entries live `access_ttl`.
    pub fn new(redis: ConnectionManager, settings: &Settings) -> Self {
        Self {
            redis,
            key_prefix: settings.prefixed("auth:revoked:"),
            channel: Self::channel(settings),
            ttl_secs: settings.access_token_ttl.as_secs().max(1),
        }
    }

    /// Caches and publishes `revoked` in one round trip.
    pub async fn publish(&self, revoked: &[Revoked]) -> redis::RedisResult<()> {
        if revoked.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for r in revoked {
            let payload = serde_json::to_string(&RevocationMessage::from(r))
                .unwrap_or_else(|_| unreachable!("a struct of strings serialises"));
            pipe.set_ex(
                format!("{}{}", self.key_prefix, r.session_id),
                r.reason.as_str(),
                self.ttl_secs,
            )
            .ignore()
            .publish(&self.channel, payload)
            .ignore();
        }
        let mut conn = self.redis.clone();
        pipe.query_async::<()>(&mut conn).await
    }

    /// Publishes now; on failure keeps retrying in the background (the revocation is
    /// already durable, and gateways also reload it from auth).
    pub async fn announce(&self, revoked: Vec<Revoked>) {
        if revoked.is_empty() {
            return;
        }
        for r in &revoked {
            metrics::counter!("beehive_auth_revocations_total", "reason" => r.reason.as_str())
                .increment(1);
        }
        match self.publish(&revoked).await {
            Ok(()) => {
                for r in &revoked {
                    tracing::info!(session_id = %r.session_id, user_id = %r.user_id, reason = r.reason.as_str(), "session revoked");
                }
            }
            Err(error) => {
                metrics::counter!("beehive_auth_revocation_publish_failures_total").increment(1);
                tracing::warn!(%error, sessions = revoked.len(), "cannot publish revocations, retrying in the background");
                let publisher = self.clone();
                tokio::spawn(async move {
                    for delay in RETRY_DELAYS {
                        tokio::time::sleep(delay).await;
                        match publisher.publish(&revoked).await {
                            Ok(()) => {
                                tracing::info!(
                                    sessions = revoked.len(),
                                    "revocations published after retry"
                                );
                                return;
                            }
                            Err(error) => tracing::warn!(%error, "revocation publish retry failed"),
                        }
                    }
                    tracing::error!(
                        sessions = revoked.len(),
                        "giving up publishing revocations; gateways learn them on their next reload"
                    );
                });
            }
        }
    }
}
