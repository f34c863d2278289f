//! The local registry of this instance's sockets and each socket's bounded outbox.
//!
//! The push path looks up every recipient of every event here, so the registry is
//! sharded (a lock per shard, held for a few pointer copies) and keyed by the 16-byte
//! user UUID. Each connection's [`Outbox`] is a bounded queue of pre-encoded frames:
//! pushing never blocks and never allocates per recipient beyond a reference count,
//! and a client that lets its outbox fill up is disconnected instead of stalling the
//! push path or growing memory without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use beehive_proto::v1 as pb;
use tokio::sync::Notify;
use uuid::Uuid;

/// Why a socket must close, in the order of precedence (a kick wins over a slow
/// client, so the client learns it was logged out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The session was revoked: send `kicked`, then close with 4001.
    Kicked(pb::RevocationReason),
    /// The outbox overflowed: the client does not read fast enough.
    Overflow,
    /// The gateway is shutting down: unlike the other reasons, the frames already
    /// queued are still written first (the `reconnect` frame among them), then the
    /// socket closes with 1012.
    Shutdown,
}

/// What the socket task gets from its outbox.
#[derive(Debug)]
pub enum Taken {
    /// Frames to write, oldest first (possibly none).
    Frames(VecDeque<Utf8Bytes>),
    /// Stop: write the closing frames for this reason and end.
    Close(CloseReason),
}

struct OutboxState {
    frames: VecDeque<Utf8Bytes>,
    close: Option<CloseReason>,
}

/// A bounded queue of live frames for one socket.
pub struct Outbox {
    state: Mutex<OutboxState>,
    ready: Notify,
    capacity: usize,
}

impl Outbox {
    /// An outbox holding at most `capacity` frames; it allocates nothing until used.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(OutboxState {
                frames: VecDeque::new(),
                close: None,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // The state is plain data that stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame. Returns `false` when the socket is closing or the queue was
    /// full, in which case the socket is told to close as too slow.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        if state.frames.len() >= self.capacity {
            state.close = Some(CloseReason::Overflow);
            state.frames = VecDeque::new();
            drop(state);
            self.ready.notify_one();
            return false;
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        drop(state);
        // The socket drains everything on each wake-up, so only the first frame of a
        // batch needs to wake it.
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Asks the socket to close. The first reason wins, except that a kick replaces
    /// any other reason (the client must learn why).
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        match (state.close, reason) {
            (None, _) | (Some(_), CloseReason::Kicked(_)) => state.close = Some(reason),
            _ => return,
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Whether a close was requested.
    pub fn closing(&self) -> Option<CloseReason> {
        self.lock().close
    }

    /// Takes everything queued, or the close request. A shutdown close hands out the
    /// frames queued before it first; the other reasons drop them.
    pub fn take(&self) -> Taken {
        let mut state = self.lock();
        match state.close {
            Some(CloseReason::Shutdown) if !state.frames.is_empty() => {
                Taken::Frames(std::mem::take(&mut state.frames))
            }
            Some(reason) => Taken::Close(reason),
            None => Taken::Frames(std::mem::take(&mut state.frames)),
        }
    }

    /// Completes when something was pushed or a close was requested since the last
    /// wake-up (a spurious wake-up is possible; callers re-check with `take`).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Completes once a close is requested that must not wait for a write in
    /// progress (a kick or a slow client). A shutdown close never completes it: the
    /// socket's queue is flushed before it closes.
    pub async fn interrupted(&self) -> CloseReason {
        loop {
            let notified = self.ready.notified();
            if let Some(reason) = self.closing().filter(|r| *r != CloseReason::Shutdown) {
                return reason;
            }
            notified.await;
        }
    }
}

/// One WebSocket of one device.
pub struct Conn {
    /// Unique per socket (presence tells sockets of one device apart by it).
    pub id: Uuid,
    pub user_id: Uuid,
    pub session_id: Box<str>,
    pub device_id: Box<str>,
    pub outbox: Outbox,
    /// Set by whoever first queues this socket's presence unregistration (the drain
    /// before closing it, or the end of the socket), so it is unregistered once and
    /// the heartbeat stops refreshing it.
    pub(crate) unregistered: AtomicBool,
}

impl Conn {
    /// A socket of `user_id`'s device `device_id` with an empty outbox of `capacity`.
    pub fn new(
        id: Uuid,
        user_id: Uuid,
        session_id: Box<str>,
        device_id: Box<str>,
        capacity: usize,
    ) -> Self {
        Self {
            id,
            user_id,
            session_id,
            device_id,
            outbox: Outbox::new(capacity),
            unregistered: AtomicBool::new(false),
        }
    }

    /// Marks the presence unregistration as queued; true for the first caller only.
    pub(crate) fn mark_unregistered(&self) -> bool {
        !self.unregistered.swap(true, Ordering::AcqRel)
    }

    /// Whether the presence unregistration was queued.
    pub(crate) fn is_unregistered(&self) -> bool {
        self.unregistered.load(Ordering::Acquire)
    }

    /// The presence service's description of this socket.
    pub fn to_proto(&self) -> pb::Connection {
        pb::Connection {
            user_id: self.user_id.hyphenated().to_string(),
            device_id: self.device_id.to_string(),
            connection_id: self.id.hyphenated().to_string(),
            session_id: self.session_id.to_string(),
        }
    }
}

type Shard = Mutex<HashMap<Uuid, Vec<Arc<Conn>>>>;

/// Every socket of this instance, by user.
pub struct Registry {
    shards: Box<[Shard]>,
    connections: AtomicUsize,
    users: AtomicUsize,
}

/// Result of one event's fan-out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Sockets that got the frame.
    pub delivered: usize,
    /// Sockets told to close because their outbox was full.
    pub overflowed: usize,
}

impl Registry {
    /// A registry with `shards` locks (rounded up to a power of two).
    pub fn new(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        Self {
            shards: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
            connections: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
        }
    }

    fn shard(&self, user: &Uuid) -> MutexGuard<'_, HashMap<Uuid, Vec<Arc<Conn>>>> {
        // UUIDv7 and v4 both end in random bits: the low bits spread users evenly.
        let index = (user.as_u128() as usize) & (self.shards.len() - 1);
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a socket.
    pub fn insert(&self, conn: Arc<Conn>) {
        let mut shard = self.shard(&conn.user_id);
        let list = shard.entry(conn.user_id).or_default();
        if list.is_empty() {
            self.users.fetch_add(1, Ordering::Relaxed);
        }
        list.push(conn);
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a socket; returns whether it was present.
    pub fn remove(&self, conn: &Conn) -> bool {
        let mut shard = self.shard(&conn.user_id);
        let Some(list) = shard.get_mut(&conn.user_id) else {
            return false;
        };
        let Some(position) = list.iter().position(|c| c.id == conn.id) else {
            return false;
        };
        list.swap_remove(position);
        if list.is_empty() {
            shard.remove(&conn.user_id);
            self.users.fetch_sub(1, Ordering::Relaxed);
        }
        self.connections.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// Whether the socket is still registered.
    pub fn contains(&self, conn: &Conn) -> bool {
        self.shard(&conn.user_id)
            .get(&conn.user_id)
            .is_some_and(|list| list.iter().any(|c| c.id == conn.id))
    }

    /// Queues `frame` on every socket of `user` except the device `exclude` (the
    /// sender's, which gets an `ack` instead).
    pub fn push(&self, user: &Uuid, frame: &Utf8Bytes, exclude: Option<&str>) -> Fanout {
        let mut fanout = Fanout::default();
        let shard = self.shard(user);
        for conn in shard.get(user).into_iter().flatten() {
            if exclude.is_some_and(|device| *conn.device_id == *device) {
                continue;
            }
            if conn.outbox.push(frame.clone()) {
                fanout.delivered += 1;
            } else if conn.outbox.closing() == Some(CloseReason::Overflow) {
                fanout.overflowed += 1;
            }
        }
        fanout
    }

    /// The sockets of `user` (all of them, or those of one session).
    pub fn sockets_of(&self, user: &Uuid, session: Option<&str>) -> Vec<Arc<Conn>> {
        let shard = self.shard(user);
        shard
            .get(user)
            .into_iter()
            .flatten()
            .filter(|c| session.is_none_or(|s| *c.session_id == *s))
            .cloned()
            .collect()
    }

    /// Every socket (heartbeats, revocation re-checks, shutdown), one shard at a time
    /// so no lock is held for long.
    pub fn snapshot(&self) -> Vec<Arc<Conn>> {
        let mut all = Vec::with_capacity(self.connections());
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.extend(shard.values().flatten().cloned());
        }
        all
    }

    /// Number of sockets.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Number of users with at least one socket.
    pub fn users(&self) -> usize {
        self.users.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(user: Uuid, device: &str, session: &str, capacity: usize) -> Arc<Conn> {
        Arc::new(Conn::new(
            Uuid::new_v4(),
            user,
            session.into(),
            device.into(),
            capacity,
        ))
    }

    fn frames(conn: &Conn) -> Vec<String> {
        match conn.outbox.take() {
            Taken::Frames(f) => f.into_iter().map(|f| f.to_string()).collect(),
            Taken::Close(reason) => panic!("closing: {reason:?}"),
        }
    }

    #[test]
    fn every_device_but_the_excluded_one_gets_the_frame() {
        let registry = Registry::new(8);
        let user = Uuid::now_v7();
        let phone = conn(user, "phone", "s1", 8);
        let laptop = conn(user, "laptop", "s2", 8);
        let other = conn(Uuid::now_v7(), "phone", "s3", 8);
        for c in [&phone, &laptop, &other] {
            registry.insert(c.clone());
        }
        assert_eq!((registry.connections(), registry.users()), (3, 2));
        let frame = Utf8Bytes::from_static("f");
        let fanout = registry.push(&user, &frame, Some("phone"));
        assert_eq!(fanout.delivered, 1);
        assert_eq!(frames(&laptop), vec!["f"]);
        assert!(frames(&phone).is_empty());
        assert!(frames(&other).is_empty());
        registry.push(&user, &frame, None);
        assert_eq!(frames(&phone), vec!["f"]);
    }

    #[test]
    fn remove_forgets_users_without_sockets() {
        let registry = Registry::new(4);
        let user = Uuid::now_v7();
        let a = conn(user, "a", "s", 4);
        let b = conn(user, "b", "s", 4);
        registry.insert(a.clone());
        registry.insert(b.clone());
        assert!(registry.contains(&a) && registry.contains(&b));
        assert!(registry.remove(&a));
        assert!(!registry.remove(&a));
        assert!(!registry.contains(&a) && registry.contains(&b));
        assert_eq!((registry.connections(), registry.users()), (1, 1));
        assert!(registry.remove(&b));
        assert_eq!((registry.connections(), registry.users()), (0, 0));
        assert!(registry.snapshot().is_empty());
    }

    #[test]
    fn a_full_outbox_closes_the_slow_socket_only() {
        let registry = Registry::new(4);
        let slow_user = Uuid::now_v7();
        let fast_user = Uuid::now_v7();
        let slow = conn(slow_user, "d", "s", 3);
        let fast = conn(fast_user, "d", "s", 3);
        registry.insert(slow.clone());
        registry.insert(fast.clone());
        let frame = Utf8Bytes::from_static("x");
        for _ in 0..3 {
            assert_eq!(registry.push(&slow_user, &frame, None).delivered, 1);
        }
        let fanout = registry.push(&slow_user, &frame, None);
        assert_eq!(
            fanout,
            Fanout {
                delivered: 0,
                overflowed: 1
            }
        );
        assert!(matches!(
            slow.outbox.take(),
            Taken::Close(CloseReason::Overflow)
        ));
        // Later frames are refused without growing anything.
        assert!(!slow.outbox.push(frame.clone()));
        // The other socket is unaffected and drains normally.
        for _ in 0..10 {
            assert_eq!(registry.push(&fast_user, &frame, None).delivered, 1);
            assert_eq!(frames(&fast).len(), 1);
        }
    }

    #[test]
    fn kicks_override_other_close_reasons() {
        let outbox = Outbox::new(1);
        outbox.close(CloseReason::Overflow);
        outbox.close(CloseReason::Shutdown);
        assert_eq!(outbox.closing(), Some(CloseReason::Overflow));
        outbox.close(CloseReason::Kicked(pb::RevocationReason::Logout));
        assert_eq!(
            outbox.closing(),
            Some(CloseReason::Kicked(pb::RevocationReason::Logout))
        );
    }

    #[test]
    fn sockets_of_filters_by_session() {
        let registry = Registry::new(2);
        let user = Uuid::now_v7();
        registry.insert(conn(user, "a", "s1", 1));
        registry.insert(conn(user, "b", "s2", 1));
        assert_eq!(registry.sockets_of(&user, Some("s1")).len(), 1);
        assert_eq!(registry.sockets_of(&user, None).len(), 2);
        assert!(registry.sockets_of(&Uuid::now_v7(), None).is_empty());
    }

    #[test]
    fn a_shutdown_close_flushes_the_queue_first_and_other_closes_drop_it() {
        let outbox = Outbox::new(4);
        outbox.push(Utf8Bytes::from_static("a"));
        outbox.push(Utf8Bytes::from_static("b"));
        outbox.close(CloseReason::Shutdown);
        // Nothing is queued after the close request.
        assert!(!outbox.push(Utf8Bytes::from_static("late")));
        match outbox.take() {
            Taken::Frames(frames) => {
                let frames: Vec<&str> = frames.iter().map(|f| f.as_str()).collect();
                assert_eq!(frames, ["a", "b"]);
            }
            Taken::Close(reason) => panic!("closed before flushing: {reason:?}"),
        }
        assert!(matches!(outbox.take(), Taken::Close(CloseReason::Shutdown)));

        let kicked = Outbox::new(4);
        kicked.push(Utf8Bytes::from_static("a"));
        kicked.close(CloseReason::Kicked(pb::RevocationReason::Logout));
        assert!(matches!(
            kicked.take(),
            Taken::Close(CloseReason::Kicked(_))
        ));
    }

    #[test]
    fn presence_unregistration_is_claimed_once() {
        let socket = conn(Uuid::now_v7(), "d", "s", 1);
        assert!(!socket.is_unregistered());
        assert!(socket.mark_unregistered());
        assert!(!socket.mark_unregistered());
        assert!(socket.is_unregistered());
    }

    #[tokio::test]
    async fn ready_wakes_on_push_and_interrupted_on_urgent_close() {
        let outbox = Arc::new(Outbox::new(4));
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.ready().await })
        };
        tokio::task::yield_now().await;
        outbox.push(Utf8Bytes::from_static("x"));
        waiter.await.expect("woken");
        let interrupted = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.interrupted().await })
        };
        tokio::task::yield_now().await;
        // A shutdown close lets a write in progress finish; a kick that follows does not.
        outbox.close(CloseReason::Shutdown);
        tokio::task::yield_now().await;
        assert!(!interrupted.is_finished());
        outbox.close(CloseReason::Kicked(pb::RevocationReason::Logout));
        assert_eq!(
            interrupted.await.expect("woken"),
            CloseReason::Kicked(pb::RevocationReason::Logout)
        );
    }
}
