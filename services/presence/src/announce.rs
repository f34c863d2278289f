//! Announces online/offline transitions to the user's friends.
//!
//! Registration happens before a WebSocket's 101, so it must not wait for friend
//! lookups and broker confirms: transitions go into a bounded queue and one worker
//! per process announces them in batches. A batch keeps each user's latest state only
//! (an online-then-offline flap within a batch announces just "offline"), looks up
//! friends with bounded concurrency, routes all recipients with one pipelined Redis
//! read and publishes everything with one round of broker confirms. Announcements
//! are best effort: the state in Redis is exact and clients can ask GET /presence.

use std::collections::HashMap;
use std::sync::Arc;

use beehive_common::Shutdown;
use beehive_common::events::EventBus;
use beehive_proto::v1::social_service_client::SocialServiceClient;
use beehive_proto::v1::{Event, ListFriendsRequest, PageRequest, PresenceEvent, event};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::presence::{MAX_ROUTE_IDS, routes, split_by_instance};
use crate::store::Store;
use beehive_common::grpc::ClientChannel;

/// Most transitions announced per batch.
const BATCH: usize = 1000;
/// Concurrent friend-list lookups per batch.
const LOOKUPS: usize = 8;
/// Friend list page size (the social service's maximum).
const FRIENDS_PAGE: u32 = 200;
/// Friend pages read per user: bounds the work one user can cause (40k friends).
const MAX_FRIEND_PAGES: usize = 200;

/// One user's change of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Whose state changed.
    pub user: Uuid,
    /// The new state.
    pub online: bool,
}

/// The sending side of the announcement queue.
#[derive(Clone)]
pub struct Announcer {
    queue: mpsc::Sender<Transition>,
}

impl Announcer {
    /// Queues a transition without waiting; when the queue is full the announcement
    /// is dropped and counted.
    pub fn announce(&self, user: Uuid, online: bool) {
        if self.queue.try_send(Transition { user, online }).is_err() {
            metrics::counter!("beehive_presence_announcements_dropped_total").increment(1);
            tracing::warn!(%user, online, "presence announcement queue full; dropped");
        }
    }
}

/// Where announcements go.
pub struct Targets {
    /// Routes recipients to gateway instances (presence owns the routing table).
    pub store: Store,
    /// Friend lists: only friends hear about a user's presence.
    pub social: SocialServiceClient<ClientChannel>,
    /// Publishes the routed events with broker confirms.
    pub bus: EventBus,
}

/// Starts the worker; it stops when `shutdown` fires.
pub fn spawn(targets: Targets, capacity: usize, shutdown: Shutdown) -> Announcer {
    let (queue, mut receiver) = mpsc::channel(capacity.max(1));
    let targets = Arc::new(targets);
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                () = shutdown.wait() => return,
                next = receiver.recv() => match next {
                    Some(t) => t,
                    None => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match receiver.try_recv() {
                    Ok(t) => batch.push(t),
                    Err(_) => break,
                }
            }
            announce_batch(&targets, latest_per_user(batch)).await;
        }
    });
    Announcer { queue }
}

/// Keeps each user's last transition, in order of first appearance.
pub fn latest_per_user(batch: Vec<Transition>) -> Vec<Transition> {
    let mut position: HashMap<Uuid, usize> = HashMap::new();
    let mut out: Vec<Transition> = Vec::with_capacity(batch.len());
    for t in batch {
        match position.get(&t.user) {
            Some(&i) => out[i] = t,
            None => {
                position.insert(t.user, out.len());
                out.push(t);
            }
        }
    }
    out
}

async fn announce_batch(targets: &Targets, batch: Vec<Transition>) {
    let lookups = futures::stream::iter(batch)
        .map(|t| {
            let social = targets.social.clone();
            async move { (t, friends_of(social, t.user).await) }
        })
        .buffer_unordered(LOOKUPS)
        .collect::<Vec<_>>()
        .await;
    let mut events = Vec::new();
    let mut recipients: Vec<Uuid> = Vec::new();
    for (t, friends) in lookups {
        match friends {
            Ok(friends) if friends.is_empty() => {}
            Ok(friends) => {
                recipients.extend(friends.iter().filter_map(|f| Uuid::parse_str(f).ok()));
                events.push(Event {
                    recipient_ids: friends,
                    payload: Some(event::Payload::Presence(PresenceEvent {
                        user_id: t.user.to_string(),
                        online: t.online,
                    })),
                    ..Event::default()
                });
            }
            Err(status) => {
                metrics::counter!("beehive_presence_announcements_failed_total").increment(1);
                tracing::warn!(user = %t.user, code = ?status.code(), message = status.message(), "cannot list friends for a presence announcement");
            }
        }
    }
    if events.is_empty() {
        return;
    }
    recipients.sort_unstable();
    recipients.dedup();
    let mut table = std::collections::BTreeMap::new();
    for chunk in recipients.chunks(MAX_ROUTE_IDS) {
        match targets.store.observe(chunk, false).await {
            Ok(observed) => {
                let states: Vec<_> = chunk
                    .iter()
                    .copied()
                    .zip(observed.into_iter().map(|o| o.state))
                    .collect();
                for (instance, users) in routes(&states) {
                    table.entry(instance).or_insert_with(Vec::new).extend(users);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot route presence announcements");
                return;
            }
        }
    }
    let routed = split_by_instance(events, &table);
    if routed.is_empty() {
        return;
    }
    let count = routed.len();
    match targets.bus.publish(&routed).await {
        Ok(()) => {
            metrics::counter!("beehive_presence_announcements_total").increment(count as u64);
        }
        Err(error) => {
            metrics::counter!("beehive_presence_announcements_failed_total")
                .increment(count as u64);
            tracing::warn!(%error, events = count, "presence announcements not published");
        }
    }
}

/// Every friend of `user`, all pages.
async fn friends_of(
    mut social: SocialServiceClient<ClientChannel>,
    user: Uuid,
) -> Result<Vec<String>, tonic::Status> {
    let mut friends = Vec::new();
    let mut cursor = String::new();
    for _ in 0..MAX_FRIEND_PAGES {
        let page = social
            .list_friends(ListFriendsRequest {
                user_id: user.to_string(),
                page: Some(PageRequest {
                    limit: FRIENDS_PAGE,
                    cursor: cursor.clone(),
                }),
            })
            .await?
            .into_inner();
        friends.extend(page.friend_ids);
        cursor = page.page.map(|p| p.next_cursor).unwrap_or_default();
        if cursor.is_empty() {
            return Ok(friends);
        }
    }
    tracing::warn!(%user, friends = friends.len(), "friend list truncated for presence announcement");
    Ok(friends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_each_users_last_state_in_first_seen_order() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let t = |user, online| Transition { user, online };
        let out = latest_per_user(vec![t(a, true), t(b, true), t(a, false)]);
        assert_eq!(out, vec![t(a, false), t(b, true)]);
    }
}
