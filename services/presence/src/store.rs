//! Every Redis command of the presence service.
//!
//! Keys, all under `<installation>:presence:`:
//! - `user:<user_id>`: hash `connection_id -> "<expires_ms>|<instance>|<session>|<device>"`
//!   (see [`crate::presence`]); the user is online while one entry has not expired.
//! - `conns`: sorted set `"<user_id>|<connection_id>"` scored by expiry: the sweeper's
//!   index of what expires next, so a dead gateway's users are announced offline and
//!   get a last-seen time even though nobody unregisters them.
//! - `gone:<user_id>:<connection_id>`: a short tombstone written by unregistration, so
//!   a heartbeat carrying a list taken just before the socket closed does not bring
//!   the connection back.
//! - `last_seen:<user_id>`: milliseconds since the epoch of the last offline
//!   transition (no expiry).
//!
//! Decisions that depend on the state of several entries (came online, went offline)
//! are Lua scripts, so concurrent registrations of one user across gateways and
//! presence replicas see one consistent order. Every time comes from the Redis clock
//! (`TIME`), so presence replicas with skewed clocks agree. The sweep script derives
//! key names from the index, which is fine on a single Redis (the deployment model)
//! but not on Redis Cluster.

use std::collections::HashMap;
use std::time::Duration;

use beehive_common::{Error, Result};
use redis::aio::ConnectionManager;
use redis::{Script, Value};
use uuid::Uuid;

use crate::presence::{Conn, UserState, user_state};

/// Registrations per heartbeat script call: bounds how long one script blocks Redis.
const HEARTBEAT_CHUNK: usize = 256;

/// Extra lifetime of a user hash beyond its entries' TTL: a safety net that removes
/// hashes the sweeper somehow missed, long enough never to race it.
const HASH_KEEP: Duration = Duration::from_secs(3600);

/// The Lua prologue shared by the scripts: `now` in milliseconds from the Redis clock
/// and `live(hash)`, the number of unexpired entries of a user hash.
const PROLOGUE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function live(hash)
  local n = 0
  local entries = redis.call('HGETALL', hash)
  for i = 2, #entries, 2 do
    local exp = tonumber(string.match(entries[i], '^(%d+)|'))
    if exp and exp > now then n = n + 1 end
  end
  return n
end
";

/// KEYS: user hash, expiry index, tombstone.
/// ARGV: connection id, value tail, ttl ms, index member, hash keep ms.
/// Returns 1 when the user had no live connection before (came online).
const REGISTER: &str = r"
local before = live(KEYS[1])
local ttl = tonumber(ARGV[3])
local expires = now + ttl
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d|%s', expires, ARGV[2]))
local keep = ttl + tonumber(ARGV[5])
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
redis.call('ZADD', KEYS[2], expires, ARGV[4])
redis.call('DEL', KEYS[3])
if before == 0 then return 1 end
return 0
";

/// KEYS: user hash, expiry index, tombstone, last seen.
/// ARGV: connection id, index member, tombstone ms, instance id.
/// Returns 1 when this was the user's last live connection (went offline); an entry
/// that already expired is left to the sweeper.
const UNREGISTER: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local instance = string.match(current, '^%d+|([^|]*)|')
  -- Another instance holds this connection id now: not ours to remove.
  if instance ~= ARGV[4] then return 0 end
end
redis.call('SET', KEYS[3], '1', 'PX', tonumber(ARGV[3]))
if not current then return 0 end
-- Already expired: the user went offline at the expiry, and the sweeper announces
-- that and records it; removing the entry here would lose the announcement.
local exp = tonumber(string.match(current, '^(%d+)|'))
if exp and exp <= now then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if live(KEYS[1]) == 0 then
  redis.call('SET', KEYS[4], string.format('%d', now))
  return 1
end
return 0
";

/// KEYS: expiry index, then per connection: user hash, tombstone.
/// ARGV: ttl ms, hash keep ms, then per connection: connection id, value tail, member.
/// Re-asserts every listed connection not tombstoned; returns how many.
const HEARTBEAT: &str = r"
local ttl = tonumber(ARGV[1])
local keep = ttl + tonumber(ARGV[2])
local expires = now + ttl
local prefix = string.format('%d|', expires)
local n = 0
for i = 1, (#KEYS - 1) / 2 do
  local hash = KEYS[2 * i]
  local a = 3 + (i - 1) * 3
  if redis.call('EXISTS', KEYS[2 * i + 1]) == 0 then
    redis.call('HSET', hash, ARGV[a], prefix .. ARGV[a + 1])
    if redis.call('PTTL', hash) < keep then redis.call('PEXPIRE', hash, keep) end
    redis.call('ZADD', KEYS[1], expires, ARGV[a + 2])
    n = n + 1
  end
end
return n
";

/// KEYS: expiry index. ARGV: key prefix (`<installation>:presence:`), batch size.
/// Removes up to a batch of expired connections; returns the users left with no live
/// connection (went offline), whose last-seen time it records as the expiry.
const SWEEP: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local offline = {}
local done = {}
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local user, conn = string.match(member, '^([^|]+)|(.+)$')
  if user then
    local hash = ARGV[1] .. 'user:' .. user
    local current = redis.call('HGET', hash, conn)
    local exp = current and tonumber(string.match(current, '^(%d+)|'))
    if exp and exp <= now then
      redis.call('HDEL', hash, conn)
      if not done[user] and live(hash) == 0 then
        done[user] = true
        -- Seen until the registration expired, which is also what reads report
        -- between the expiry and this sweep.
        redis.call('SET', ARGV[1] .. 'last_seen:' .. user, string.format('%d', exp))
        table.insert(offline, user)
      end
    end
  end
end
return {#due, offline}
";

/// The result of one sweep step.
#[derive(Debug, Default)]
pub struct Swept {
    /// Expired index entries processed.
    pub processed: usize,
    /// Users that went offline.
    pub offline: Vec<Uuid>,
}

/// Presence state of one user as read from Redis.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Devices and instances of the live connections.
    pub state: UserState,
    /// Last offline transition, in milliseconds since the epoch.
    pub last_seen_ms: Option<u64>,
    /// The Redis clock when this was read.
    pub now_ms: u64,
}

/// The presence service's Redis access.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    register: std::sync::Arc<Script>,
    unregister: std::sync::Arc<Script>,
    heartbeat: std::sync::Arc<Script>,
    sweep: std::sync::Arc<Script>,
}

impl Store {
    /// A store under `prefix` (`settings.prefixed("presence:")`) whose registrations
    /// live `ttl`.
    pub fn new(conn: ConnectionManager, prefix: String, ttl: Duration) -> Self {
        let script = |body: &str| std::sync::Arc::new(Script::new(&format!("{PROLOGUE}{body}")));
        Self {
            conn,
            prefix,
            ttl,
            register: script(REGISTER),
            unregister: script(UNREGISTER),
            heartbeat: script(HEARTBEAT),
            sweep: script(SWEEP),
        }
    }

    /// How long a registration lives without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn user_key(&self, user: Uuid) -> String {
        format!("{}user:{user}", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}conns", self.prefix)
    }

    fn tombstone_key(&self, conn: &Conn) -> String {
        format!("{}gone:{}:{}", self.prefix, conn.user, conn.connection_id)
    }

    fn last_seen_key(&self, user: Uuid) -> String {
        format!("{}last_seen:{user}", self.prefix)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// Registers `conn` on `instance`; true when the user came online.
    pub async fn register(&self, instance: &str, conn: &Conn) -> Result<bool> {
        let came: i64 = self
            .register
            .key(self.user_key(conn.user))
            .key(self.index_key())
            .key(self.tombstone_key(conn))
            .arg(&conn.connection_id)
            .arg(conn.value_tail(instance))
            .arg(self.ttl_ms())
            .arg(conn.expiry_member())
            .arg(HASH_KEEP.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(came == 1)
    }

    /// Unregisters `conn` from `instance`; true when the user went offline.
    pub async fn unregister(&self, instance: &str, conn: &Conn) -> Result<bool> {
        let went: i64 = self
            .unregister
            .key(self.user_key(conn.user))
            .key(self.index_key())
            .key(self.tombstone_key(conn))
            .key(self.last_seen_key(conn.user))
            .arg(&conn.connection_id)
            .arg(conn.expiry_member())
            .arg(self.ttl_ms())
            .arg(instance)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(went == 1)
    }

    /// Re-asserts every connection of `conns` on `instance` for another TTL (also
    /// re-creating them after Redis lost its data). Chunks run concurrently on the
    /// multiplexed connection, so they travel pipelined. Returns how many were
    /// refreshed (tombstoned ones are skipped).
    pub async fn heartbeat(&self, instance: &str, conns: &[Conn]) -> Result<u64> {
        let calls = conns.chunks(HEARTBEAT_CHUNK).map(|chunk| {
            let mut invocation = self.heartbeat.prepare_invoke();
            invocation
                .key(self.index_key())
                .arg(self.ttl_ms())
                .arg(HASH_KEEP.as_millis() as u64);
            for conn in chunk {
                invocation
                    .key(self.user_key(conn.user))
                    .key(self.tombstone_key(conn))
                    .arg(&conn.connection_id)
                    .arg(conn.value_tail(instance))
                    .arg(conn.expiry_member());
            }
            let mut redis = self.conn.clone();
            async move { invocation.invoke_async::<u64>(&mut redis).await }
        });
        let counts = futures::future::try_join_all(calls).await?;
        Ok(counts.into_iter().sum())
    }

    /// Removes up to `batch` expired connections.
    pub async fn sweep(&self, batch: usize) -> Result<Swept> {
        let (processed, offline): (usize, Vec<String>) = self
            .sweep
            .key(self.index_key())
            .arg(&self.prefix)
            .arg(batch)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let offline = offline
            .iter()
            .filter_map(|u| Uuid::parse_str(u).ok())
            .collect();
        Ok(Swept { processed, offline })
    }

    /// Reads the state of `users` in one round trip: the Redis clock, every user hash
    /// and (with `last_seen`) every last-seen time, pipelined.
    pub async fn observe(&self, users: &[Uuid], last_seen: bool) -> Result<Vec<Observed>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for user in users {
            pipe.cmd("HGETALL").arg(self.user_key(*user));
        }
        if last_seen {
            let keys: Vec<String> = users.iter().map(|u| self.last_seen_key(*u)).collect();
            pipe.cmd("MGET").arg(keys);
        }
        let mut replies: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await?;
        let expected = 1 + users.len() + usize::from(last_seen);
        if replies.len() != expected {
            return Err(Error::internal(format!(
                "presence pipeline returned {} replies, expected {expected}",
                replies.len()
            )));
        }
        let seen: Vec<Option<u64>> = if last_seen {
            let raw = replies.pop().unwrap_or(Value::Nil);
            redis::from_redis_value(raw).map_err(Error::internal)?
        } else {
            vec![None; users.len()]
        };
        let mut replies = replies.into_iter();
        let (secs, micros): (u64, u64) =
            redis::from_redis_value(replies.next().unwrap_or(Value::Nil))
                .map_err(Error::internal)?;
        let now_ms = secs * 1000 + micros / 1000;
        replies
            .zip(seen)
            .map(|(hash, last_seen_ms)| {
                let entries: HashMap<String, String> =
                    redis::from_redis_value(hash).map_err(Error::internal)?;
                let state = user_state(
                    entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    now_ms,
                );
                Ok(Observed {
                    state,
                    last_seen_ms,
                    now_ms,
                })
            })
            .collect()
    }
}
