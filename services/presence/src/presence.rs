//! The rules of presence as plain types and functions: what a valid connection is,
//! how one is encoded in Redis, which entries count as live, and how live entries
//! turn into per-user device counts and per-instance routes.
//!
//! A connection is stored in its user's hash as
//! `connection_id -> "<expires_ms>|<instance_id>|<session_id>|<device_id>"`. It counts
//! as online while `expires_ms` (Redis clock) is in the future; registrations and
//! heartbeats push it forward by the TTL. The device id goes last because it comes
//! from clients and may contain anything, including the separator.

use std::collections::{BTreeMap, BTreeSet};

use beehive_common::id::{parse_id, parse_unique_ids};
use beehive_common::{Error, Result};
use uuid::Uuid;

/// Most users one GetPresence call may ask about.
pub const MAX_PRESENCE_IDS: usize = 500;
/// Most users one RouteUsers call may ask about.
pub const MAX_ROUTE_IDS: usize = 5000;
/// Most connections one Heartbeat call may carry (a gateway process holds at most
/// ~20k sockets; larger gateways split their list over several calls).
pub const MAX_HEARTBEAT_CONNECTIONS: usize = 50_000;
/// Longest instance id (a pod name is at most 253 characters; RabbitMQ routing keys
/// at most 255 bytes).
pub const MAX_INSTANCE_ID: usize = 253;
/// Longest connection id.
pub const MAX_CONNECTION_ID: usize = 128;
/// Longest session id.
pub const MAX_SESSION_ID: usize = 64;
/// Longest device id (client-chosen).
pub const MAX_DEVICE_ID: usize = 128;

/// One validated connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    /// The connected user.
    pub user: Uuid,
    /// Unique per socket, so one device's reconnect is a new connection.
    pub connection_id: String,
    /// The auth session the socket was opened with.
    pub session_id: String,
    /// The client's device; empty when the client named none.
    pub device_id: String,
}

impl Conn {
    /// The hash value stored for this connection, without its leading expiry (the
    /// Lua scripts prepend `<expires_ms>|` with the Redis clock).
    pub fn value_tail(&self, instance: &str) -> String {
        format!("{instance}|{}|{}", self.session_id, self.device_id)
    }

    /// The member of the expiry index: `<user_id>|<connection_id>`.
    pub fn expiry_member(&self) -> String {
        format!("{}|{}", self.user, self.connection_id)
    }
}

/// Validates an instance id: it becomes part of stored values and a RabbitMQ routing
/// key, so it is bounded and free of the separator and of whitespace.
pub fn validate_instance(instance: &str) -> Result<()> {
    if instance.is_empty() || instance.len() > MAX_INSTANCE_ID {
        return Err(Error::invalid(
            "instance_id",
            format!("instance_id must be 1-{MAX_INSTANCE_ID} characters"),
        ));
    }
    if !instance.bytes().all(|b| b.is_ascii_graphic() && b != b'|') {
        return Err(Error::invalid(
            "instance_id",
            "instance_id may only hold printable ASCII other than '|'",
        ));
    }
    Ok(())
}

/// Validates a connection from a request.
pub fn parse_connection(conn: Option<&beehive_proto::v1::Connection>) -> Result<Conn> {
    let conn = conn.ok_or_else(|| Error::invalid("connection", "connection is required"))?;
    let user = parse_id("connection.user_id", &conn.user_id)?;
    let id = &conn.connection_id;
    if id.is_empty() || id.len() > MAX_CONNECTION_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "connection.connection_id",
            format!("connection_id must be 1-{MAX_CONNECTION_ID} printable ASCII characters"),
        ));
    }
    if conn.session_id.len() > MAX_SESSION_ID || conn.session_id.contains('|') {
        return Err(Error::invalid(
            "connection.session_id",
            format!("session_id must be at most {MAX_SESSION_ID} characters without '|'"),
        ));
    }
    if conn.device_id.len() > MAX_DEVICE_ID {
        return Err(Error::invalid(
            "connection.device_id",
            format!("device_id must be at most {MAX_DEVICE_ID} bytes"),
        ));
    }
    Ok(Conn {
        user,
        connection_id: id.clone(),
        session_id: conn.session_id.clone(),
        device_id: conn.device_id.clone(),
    })
}

/// Parses and deduplicates a batch of user ids (first occurrence order), refusing
/// batches over `max`.
pub fn parse_user_ids(field: &str, values: &[String], max: usize) -> Result<Vec<Uuid>> {
    if values.len() > max {
        return Err(Error::invalid(
            field,
            format!("at most {max} user ids per call"),
        ));
    }
    parse_unique_ids(field, values)
}

/// One decoded hash entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Redis-clock milliseconds after which the connection no longer counts.
    pub expires_ms: u64,
    /// The gateway instance holding the socket (the routing key of its events).
    pub instance: &'a str,
    /// The auth session of the socket.
    pub session: &'a str,
    /// The device, possibly empty.
    pub device: &'a str,
}

/// Decodes a stored value; `None` for values this version did not write.
pub fn decode_entry(value: &str) -> Option<Entry<'_>> {
    let mut parts = value.splitn(4, '|');
    let expires_ms = parts.next()?.parse().ok()?;
    let instance = parts.next()?;
    let session = parts.next()?;
    let device = parts.next()?;
    Some(Entry {
        expires_ms,
        instance,
        session,
        device,
    })
}

/// What one user's hash says at `now_ms`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserState {
    /// Distinct connected devices; a connection without a device id counts as its own
    /// device.
    pub devices: u32,
    /// The instances holding live connections of the user.
    pub instances: BTreeSet<String>,
    /// The latest expiry among expired entries not yet swept: when a user whose
    /// gateway died was last seen, before the sweeper records it.
    pub expired_ms: Option<u64>,
}

/// Summarizes a user's `(connection_id, value)` pairs at `now_ms`, ignoring expired
/// and unreadable entries.
pub fn user_state<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    now_ms: u64,
) -> UserState {
    let mut devices = BTreeSet::new();
    let mut instances = BTreeSet::new();
    let mut expired_ms = None;
    for (connection_id, value) in entries {
        let Some(entry) = decode_entry(value) else {
            continue;
        };
        if entry.expires_ms <= now_ms {
            expired_ms = expired_ms.max(Some(entry.expires_ms));
            continue;
        }
        let device = if entry.device.is_empty() {
            (true, connection_id)
        } else {
            (false, entry.device)
        };
        devices.insert(device);
        instances.insert(entry.instance.to_owned());
    }
    UserState {
        devices: devices.len() as u32,
        instances,
        expired_ms,
    }
}

/// Groups users by the instances holding them: instance id -> user ids, both sorted.
pub fn routes(states: &[(Uuid, UserState)]) -> BTreeMap<String, Vec<Uuid>> {
    let mut out: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    for (user, state) in states {
        for instance in &state.instances {
            out.entry(instance.clone()).or_default().push(*user);
        }
    }
    for users in out.values_mut() {
        users.sort_unstable();
        users.dedup();
    }
    out
}

/// One copy of each event per instance that holds some of its recipients, carrying
/// only those recipients: presence's own routing table fed to the event bus's
/// [`beehive_common::events::split_by_instance`].
pub fn split_by_instance(
    events: Vec<beehive_proto::v1::Event>,
    routes: &BTreeMap<String, Vec<Uuid>>,
) -> Vec<(String, beehive_proto::v1::Event)> {
    let routes: Vec<beehive_proto::v1::InstanceUsers> = routes
        .iter()
        .map(|(instance, users)| beehive_proto::v1::InstanceUsers {
            instance_id: instance.clone(),
            user_ids: users.iter().map(Uuid::to_string).collect(),
        })
        .collect();
    beehive_common::events::split_by_instance(events, &routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use beehive_proto::v1::{Connection, Event};

    fn conn(user: &str, id: &str, device: &str) -> Connection {
        Connection {
            user_id: user.to_owned(),
            device_id: device.to_owned(),
            connection_id: id.to_owned(),
            session_id: "0196f7e4-6f43-7d2a-9c55-3b1f3c2a9e10".to_owned(),
        }
    }

    #[test]
    fn connections_are_validated() {
        let user = Uuid::now_v7().to_string();
        assert!(parse_connection(Some(&conn(&user, "c1", "phone|1"))).is_ok());
        assert!(parse_connection(None).is_err());
        assert!(parse_connection(Some(&conn("nope", "c1", ""))).is_err());
        assert!(parse_connection(Some(&conn(&user, "", ""))).is_err());
        assert!(parse_connection(Some(&conn(&user, "has space", ""))).is_err());
        assert!(parse_connection(Some(&conn(&user, "c1", &"d".repeat(129)))).is_err());
        let mut bad_session = conn(&user, "c1", "");
        bad_session.session_id = "a|b".into();
        assert!(parse_connection(Some(&bad_session)).is_err());
    }

    #[test]
    fn instances_are_validated() {
        assert!(validate_instance("beehive-gateway-7c9f-x2").is_ok());
        for bad in ["", "a|b", "a b", &"x".repeat(300)] {
            assert!(validate_instance(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn user_batches_are_bounded_and_deduplicated() {
        let a = Uuid::now_v7().to_string();
        let ids = parse_user_ids("user_ids", &[a.clone(), a.clone()], 10).expect("valid");
        assert_eq!(ids.len(), 1);
        assert!(parse_user_ids("user_ids", &vec![a; 11], 10).is_err());
        assert!(parse_user_ids("user_ids", &["x".to_owned()], 10).is_err());
    }

    #[test]
    fn entries_round_trip_even_with_separators_in_the_device() {
        let c = Conn {
            user: Uuid::now_v7(),
            connection_id: "c1".into(),
            session_id: "s".into(),
            device_id: "a|b".into(),
        };
        let value = format!("1700000000000|{}", c.value_tail("gw-1"));
        let entry = decode_entry(&value).expect("decodes");
        assert_eq!(entry.expires_ms, 1_700_000_000_000);
        assert_eq!(entry.instance, "gw-1");
        assert_eq!(entry.session, "s");
        assert_eq!(entry.device, "a|b");
        assert!(decode_entry("garbage").is_none());
    }

    #[test]
    fn only_live_entries_count_and_devices_are_distinct() {
        let now = 1_000;
        let state = user_state(
            [
                ("c1", "2000|gw1|s|phone"),
                ("c2", "2000|gw2|s|phone"),
                ("c3", "2000|gw2|s|"),
                ("c4", "500|gw3|s|laptop"),
                ("c5", "junk"),
            ],
            now,
        );
        assert_eq!(state.devices, 2);
        assert_eq!(
            state.instances.into_iter().collect::<Vec<_>>(),
            vec!["gw1".to_owned(), "gw2".to_owned()]
        );
        assert_eq!(state.expired_ms, Some(500));
        let gone = user_state([("c1", "1000|gw1|s|d"), ("c2", "900|gw1|s|e")], now);
        assert_eq!(gone.devices, 0);
        assert_eq!(gone.expired_ms, Some(1000));
    }

    #[test]
    fn routes_group_users_by_instance() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let state = |instances: &[&str]| UserState {
            devices: instances.len() as u32,
            instances: instances.iter().map(|s| (*s).to_owned()).collect(),
            expired_ms: None,
        };
        let table = routes(&[(a, state(&["gw1", "gw2"])), (b, state(&["gw2"]))]);
        assert_eq!(table["gw1"], vec![a]);
        let mut both = vec![a, b];
        both.sort();
        assert_eq!(table["gw2"], both);

        let event = Event {
            recipient_ids: vec![b.to_string(), Uuid::now_v7().to_string()],
            ..Event::default()
        };
        let routed = split_by_instance(vec![event], &table);
        assert_eq!(routed.len(), 1);
        assert_eq!(routed[0].0, "gw2");
        assert_eq!(routed[0].1.recipient_ids, vec![b.to_string()]);
    }
}
