//! Per-client-IP rate limits shared by every gateway replica.
//!
//! Counting happens in Redis so that N replicas enforce one limit, not N. Each limit is
//! a fixed window: one atomic Lua script increments the window's counter, starts its
//! expiry on the first hit and returns the count and the time left, which becomes
//! `Retry-After`. One round trip per limited request, only on the few endpoints that
//! have a limit (register, login, send-code).

use std::net::IpAddr;
use std::time::Duration;

use beehive_common::Error;

/// The endpoints with a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Register,
    Login,
    SendCode,
}

impl Limit {
    /// The name used in Redis keys and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Login => "login",
            Self::SendCode => "send_code",
        }
    }

    /// API.md's defaults: requests allowed per window.
    pub fn default_quota(self) -> Quota {
        let per_minute = |max| Quota {
            max,
            window: Duration::from_secs(60),
        };
        match self {
            Self::Register => per_minute(20),
            Self::Login => per_minute(30),
            Self::SendCode => per_minute(10),
        }
    }
}

/// `max` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub max: u32,
    pub window: Duration,
}

/// INCR + PEXPIRE in one atomic step; returns `{count, pttl}`. The `pttl < 0` branch
/// repairs a key that somehow lost its expiry, so a counter can never stick forever.
const SCRIPT: &str = r"
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if n == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
";

/// The limiter. Disabled (every request allowed, no Redis traffic) when
/// `Settings.rate_limits` is off.
pub struct RateLimiter {
    redis: redis::aio::ConnectionManager,
    prefix: String,
    enabled: bool,
    script: redis::Script,
    quotas: [(Limit, Quota); 3],
}

impl RateLimiter {
    /// A limiter with API.md's default quotas. `prefix` is the installation prefix.
    pub fn new(redis: redis::aio::ConnectionManager, prefix: &str, enabled: bool) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            enabled,
            script: redis::Script::new(SCRIPT),
            quotas: [Limit::Register, Limit::Login, Limit::SendCode]
                .map(|limit| (limit, limit.default_quota())),
        }
    }

    /// Overrides one quota (tests, and deployments that tune limits).
    pub fn with_quota(mut self, limit: Limit, quota: Quota) -> Self {
        for (l, q) in &mut self.quotas {
            if *l == limit {
                *q = quota;
            }
        }
        self
    }

    fn quota(&self, limit: Limit) -> Quota {
        self.quotas
            .iter()
            .find(|(l, _)| *l == limit)
            .map(|(_, q)| *q)
            .unwrap_or_else(|| limit.default_quota())
    }

    /// Whether the limiter counts at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Counts one request of `ip` against `limit`; `rate_limited` with the seconds
    /// until the window resets when over quota. When Redis is unreachable the request
    /// is allowed (and a warning logged): losing rate limiting for a moment is better
    /// than refusing every login.
    pub async fn check(&self, limit: Limit, ip: IpAddr) -> Result<(), Error> {
        if !self.enabled {
            return Ok(());
        }
        let quota = self.quota(limit);
        let key = format!("{}:ratelimit:{}:{}", self.prefix, limit.name(), ip);
        let window_ms = u64::try_from(quota.window.as_millis()).unwrap_or(u64::MAX);
        let mut redis = self.redis.clone();
        let result: Result<(i64, i64), redis::RedisError> = self
            .script
            .key(&key)
            .arg(window_ms)
            .invoke_async(&mut redis)
            .await;
        let (count, ttl_ms) = match result {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, limit = limit.name(), "rate limiter unavailable; allowing request");
                return Ok(());
            }
        };
        if count > i64::from(quota.max) {
            let ttl_ms = u64::try_from(ttl_ms.max(1)).unwrap_or(1);
            let retry_after_secs = u32::try_from(ttl_ms.div_ceil(1000)).unwrap_or(u32::MAX);
            tracing::info!(limit = limit.name(), %ip, count, retry_after_secs, "rate limited");
            return Err(Error::RateLimited {
                message: format!(
                    "too many {} requests, retry in {retry_after_secs} s",
                    limit.name().replace('_', "-")
                ),
                retry_after_secs,
            });
        }
        Ok(())
    }
}
