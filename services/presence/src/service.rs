//! The presence use cases, one method per RPC (and the sweep every replica runs):
//! each validates with the rules of [`crate::presence`], runs the store's commands and
//! queues announcements of the transitions they report. [`crate::grpc`] decodes
//! requests and encodes what comes back.

use std::collections::BTreeMap;
use std::time::Duration;

use beehive_common::{Error, Result};
use beehive_proto::v1::Connection;
use uuid::Uuid;

use crate::announce::Announcer;
use crate::presence::{MAX_HEARTBEAT_CONNECTIONS, parse_connection, routes, validate_instance};
use crate::store::Store;

/// One user's presence as GetPresence reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserPresence {
    /// Whose presence this is.
    pub user: Uuid,
    /// Whether any device of the user is connected.
    pub online: bool,
    /// How many devices are connected.
    pub devices: u32,
    /// Milliseconds since the epoch (Redis clock): now for an online user, else when
    /// it was last seen, if ever.
    pub last_seen_ms: Option<u64>,
}

/// The presence service's use cases.
#[derive(Clone)]
pub struct PresenceService {
    store: Store,
    announcer: Announcer,
}

impl PresenceService {
    /// The use cases over `store`, announcing transitions through `announcer`.
    pub fn new(store: Store, announcer: Announcer) -> Self {
        Self { store, announcer }
    }

    /// Registers a connection held by gateway `instance`; true when its user came
    /// online with it (and that is announced).
    pub async fn register_connection(
        &self,
        instance: &str,
        connection: Option<&Connection>,
    ) -> Result<bool> {
        validate_instance(instance)?;
        let conn = parse_connection(connection)?;
        let came_online = self.store.register(instance, &conn).await?;
        metrics::counter!("beehive_presence_registrations_total").increment(1);
        if came_online {
            tracing::debug!(user = %conn.user, instance, "user came online");
            self.announcer.announce(conn.user, true);
        }
        Ok(came_online)
    }

    /// Removes a connection; true when its user went offline with it (announced).
    pub async fn unregister_connection(
        &self,
        instance: &str,
        connection: Option<&Connection>,
    ) -> Result<bool> {
        validate_instance(instance)?;
        let conn = parse_connection(connection)?;
        let went_offline = self.store.unregister(instance, &conn).await?;
        if went_offline {
            tracing::debug!(user = %conn.user, instance, "user went offline");
            self.announcer.announce(conn.user, false);
        }
        Ok(went_offline)
    }

    /// Pushes the expiry of every listed connection of `instance` forward; returns the
    /// registration TTL the gateway should heartbeat within.
    pub async fn heartbeat(&self, instance: &str, connections: &[Connection]) -> Result<Duration> {
        validate_instance(instance)?;
        if connections.len() > MAX_HEARTBEAT_CONNECTIONS {
            return Err(Error::invalid(
                "connections",
                format!("at most {MAX_HEARTBEAT_CONNECTIONS} connections per heartbeat"),
            ));
        }
        let conns = connections
            .iter()
            .map(|c| parse_connection(Some(c)))
            .collect::<Result<Vec<_>>>()?;
        let refreshed = self.store.heartbeat(instance, &conns).await?;
        tracing::debug!(instance, connections = conns.len(), refreshed, "heartbeat");
        Ok(self.store.ttl())
    }

    /// Whether each of `users` is online, on how many devices, and when it was last seen.
    pub async fn get_presence(&self, users: &[Uuid]) -> Result<Vec<UserPresence>> {
        let observed = self.store.observe(users, true).await?;
        Ok(users
            .iter()
            .zip(observed)
            .map(|(user, o)| {
                let online = o.state.devices > 0;
                // An online user is seen now; an offline one when it last left, or
                // when its last registration expired if no sweep recorded that yet.
                let last_seen_ms = if online {
                    Some(o.now_ms)
                } else {
                    o.last_seen_ms.max(o.state.expired_ms)
                };
                UserPresence {
                    user: *user,
                    online,
                    devices: o.state.devices,
                    last_seen_ms,
                }
            })
            .collect())
    }

    /// Which gateway instances hold connections of `users`: instance id -> user ids.
    pub async fn route_users(&self, users: Vec<Uuid>) -> Result<BTreeMap<String, Vec<Uuid>>> {
        let observed = self.store.observe(&users, false).await?;
        let states: Vec<_> = users
            .into_iter()
            .zip(observed.into_iter().map(|o| o.state))
            .collect();
        Ok(routes(&states))
    }

    /// Removes up to `batch` expired connections and announces who went offline;
    /// returns how many entries it processed.
    pub async fn sweep(&self, batch: usize) -> Result<usize> {
        let swept = self.store.sweep(batch).await?;
        for user in &swept.offline {
            tracing::debug!(%user, "user went offline (registration expired)");
            self.announcer.announce(*user, false);
        }
        if swept.processed > 0 {
            metrics::counter!("beehive_presence_expired_total").increment(swept.processed as u64);
        }
        Ok(swept.processed)
    }
}
