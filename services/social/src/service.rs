//! The social use cases, one method per RPC: each runs the rules of [`crate::friends`]
//! against the store inside one transaction per user pair, chooses what the API says
//! when something is refused or absent, then announces what changed on the event bus.
//! The only caller of [`crate::store`].

use std::sync::Arc;
use std::time::Duration;

use beehive_common::events::EventBus;
use beehive_common::time::to_timestamp;
use beehive_common::{Error, Result};
use beehive_proto::v1::{Event, FriendRequest, FriendRequestStatus, RequestDirection, event};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::friends::{
    self, FriendCursor, REQUEST_LIFETIME, RequestCursor, StoredStatus, blocks_duplicate, is_expired,
};
use crate::store::{RequestRow, Store};

/// What [`SocialService::send_request`] did.
#[derive(Debug)]
pub enum Sent {
    /// A new pending request.
    Created(FriendRequest),
    /// The addressee had already asked the sender: that request was accepted instead,
    /// and the two are now friends.
    AcceptedReverse(FriendRequest),
}

impl Sent {
    /// The request the caller gets back.
    pub fn into_request(self) -> FriendRequest {
        match self {
            Self::Created(r) | Self::AcceptedReverse(r) => r,
        }
    }
}

/// One page of a listing.
pub struct Page<T> {
    /// The page's items, at most the effective limit.
    pub items: Vec<T>,
    /// Empty at the end.
    pub next_cursor: String,
}

/// The social service's state.
pub struct SocialService {
    store: Store,
    bus: Option<Arc<Notifier>>,
    /// See [`crate::SocialConfig::notify_timeout`].
    notify_timeout: Duration,
}

impl SocialService {
    /// A service over `store` that announces requests and acceptances on `bus` (none:
    /// nothing is announced, for tools that only read).
    pub fn new(store: Store, bus: Option<Arc<Notifier>>, notify_timeout: Duration) -> Self {
        Self {
            store,
            bus,
            notify_timeout,
        }
    }

    /// Marks at most `batch` stale pending requests expired; returns how many. Reads
    /// already treat them as expired; this keeps the pending-only indexes small.
    pub async fn expire_stale_requests(&self, batch: u32) -> Result<u64> {
        self.store
            .expire_stale(REQUEST_LIFETIME, i64::from(batch))
            .await
    }

    /// Sends a friend request from `from` to `to` (ids already validated as UUIDs).
    pub async fn send_request(&self, from: Uuid, to: Uuid, message: &str) -> Result<Sent> {
        if from == to {
            return Err(Error::invalid(
                "to_user_id",
                "cannot send a friend request to yourself",
            ));
        }
        friends::validate_message(message)?;
        let mut tx = self.store.begin_pair(from, to).await?;
        if tx.are_friends(from, to).await? {
            return Err(Error::AlreadyExists("you are already friends".into()));
        }
        let now = tx.now().await?;
        if let Some(reverse) = tx.pending_request(to, from).await?
            && !is_expired(reverse.created_at, now)
        {
            tx.set_status(reverse.id, StoredStatus::Accepted).await?;
            tx.insert_friendship(from, to).await?;
            tx.commit().await?;
            let accepted = to_proto(&reverse, FriendRequestStatus::Accepted);
            tracing::info!(request_id = %reverse.id, %from, %to, "opposite friend request accepted");
            metrics::counter!("beehive_friend_requests_total", "outcome" => "accepted_reverse")
                .increment(1);
            self.notify(
                reverse.from_user_id,
                event::Payload::FriendAccepted(accepted.clone()),
            )
            .await;
            return Ok(Sent::AcceptedReverse(accepted));
        }
        if let Some(previous) = tx.pending_request(from, to).await? {
            if blocks_duplicate(previous.created_at, now) {
                return Err(already_pending());
            }
            // Older than the duplicate window: the new request supersedes it, so the
            // addressee sees one request per sender.
            tx.set_status(previous.id, StoredStatus::Expired).await?;
        }
        // The pair lock makes a refused insert unreachable unless a writer bypassed it.
        let row = tx
            .insert_request(Uuid::now_v7(), from, to, message)
            .await?
            .ok_or_else(already_pending)?;
        tx.commit().await?;
        let request = to_proto(&row, FriendRequestStatus::Pending);
        tracing::info!(request_id = %row.id, %from, %to, "friend request sent");
        metrics::counter!("beehive_friend_requests_total", "outcome" => "created").increment(1);
        self.notify(to, event::Payload::FriendRequest(request.clone()))
            .await;
        Ok(Sent::Created(request))
    }

    /// Pending, unexpired requests to or from `user`, newest first.
    pub async fn list_requests(
        &self,
        user: Uuid,
        direction: RequestDirection,
        limit: u32,
        cursor: &str,
    ) -> Result<Page<FriendRequest>> {
        let limit = friends::page_limit(limit);
        let after = RequestCursor::decode(cursor)?.map(|c| (c.created_at, c.id));
        let incoming = direction == RequestDirection::Incoming;
        let mut rows = self
            .store
            .pending_requests(
                user,
                incoming,
                after,
                REQUEST_LIFETIME,
                i64::from(limit) + 1,
            )
            .await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last()
                .map(|last| {
                    RequestCursor {
                        created_at: last.created_at,
                        id: last.id,
                    }
                    .encode()
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        let now = Utc::now();
        let items = rows
            .iter()
            .map(|row| Ok(to_proto(row, effective(row, now)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, next_cursor })
    }

    /// Accepts request `request_id` addressed to `user`: they become friends both ways.
    pub async fn accept(&self, user: Uuid, request_id: Uuid) -> Result<FriendRequest> {
        let (mut tx, row) = self.lock_pending_for(user, request_id).await?;
        tx.set_status(row.id, StoredStatus::Accepted).await?;
        tx.insert_friendship(row.from_user_id, row.to_user_id)
            .await?;
        tx.commit().await?;
        let accepted = to_proto(&row, FriendRequestStatus::Accepted);
        tracing::info!(request_id = %row.id, from = %row.from_user_id, to = %user, "friend request accepted");
        self.notify(
            row.from_user_id,
            event::Payload::FriendAccepted(accepted.clone()),
        )
        .await;
        Ok(accepted)
    }

    /// Rejects request `request_id` addressed to `user`.
    pub async fn reject(&self, user: Uuid, request_id: Uuid) -> Result<()> {
        let (mut tx, row) = self.lock_pending_for(user, request_id).await?;
        tx.set_status(row.id, StoredStatus::Rejected).await?;
        tx.commit().await?;
        tracing::info!(request_id = %row.id, from = %row.from_user_id, to = %user, "friend request rejected");
        Ok(())
    }

    /// Finds a pending, unexpired request addressed to `user` and locks its pair.
    /// Anything else (unknown id, someone else's request, already decided, expired)
    /// is `not_found`, so a caller learns nothing about requests that are not theirs.
    async fn lock_pending_for(
        &self,
        user: Uuid,
        request_id: Uuid,
    ) -> Result<(crate::store::PairTx, RequestRow)> {
        let not_found = || Error::NotFound("no pending friend request with this id".into());
        // Read without locks first to learn the pair: every writer takes the pair lock
        // before any row lock, so lock order is the same everywhere.
        let row = self
            .store
            .request(request_id)
            .await?
            .filter(|r| r.to_user_id == user)
            .ok_or_else(not_found)?;
        let mut tx = self
            .store
            .begin_pair(row.from_user_id, row.to_user_id)
            .await?;
        let now = tx.now().await?;
        let row = tx
            .request_for_update(request_id)
            .await?
            .filter(|r| StoredStatus::from_code(r.status) == Some(StoredStatus::Pending))
            .filter(|r| !is_expired(r.created_at, now))
            .ok_or_else(not_found)?;
        Ok((tx, row))
    }

    /// Friends of `user`, by id.
    pub async fn list_friends(&self, user: Uuid, limit: u32, cursor: &str) -> Result<Page<Uuid>> {
        let limit = friends::page_limit(limit);
        let after = FriendCursor::decode(cursor)?.map(|c| c.0);
        let mut ids = self
            .store
            .friends(user, after, i64::from(limit) + 1)
            .await?;
        let next_cursor = if ids.len() > limit as usize {
            ids.truncate(limit as usize);
            ids.last()
                .map(|last| FriendCursor(*last).encode())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            items: ids,
            next_cursor,
        })
    }

    /// Ends the friendship of `user` and `friend` in both directions.
    pub async fn delete_friend(&self, user: Uuid, friend: Uuid) -> Result<()> {
        let mut tx = self.store.begin_pair(user, friend).await?;
        let removed = tx.delete_friendship(user, friend).await?;
        if removed == 0 {
            return Err(Error::NotFound("this user is not your friend".into()));
        }
        tx.commit().await?;
        tracing::info!(%user, %friend, "friendship ended");
        Ok(())
    }

    /// Whether `a` and `b` are friends.
    pub async fn are_friends(&self, a: Uuid, b: Uuid) -> Result<bool> {
        if a == b {
            return Ok(false);
        }
        self.store.are_friends(a, b).await
    }

    /// The candidates that are friends of `user`, in the candidates' order.
    pub async fn filter_friends(&self, user: Uuid, candidates: &[Uuid]) -> Result<Vec<Uuid>> {
        let found: std::collections::HashSet<Uuid> = self
            .store
            .filter_friends(user, candidates)
            .await?
            .into_iter()
            .collect();
        Ok(candidates
            .iter()
            .copied()
            .filter(|c| found.contains(c))
            .collect())
    }

    /// Publishes one event to `recipient`'s devices. Failures are logged, never
    /// returned: the change is committed and clients also see it by listing.
    async fn notify(&self, recipient: Uuid, payload: event::Payload) {
        let Some(bus) = &self.bus else {
            return;
        };
        let kind = match &payload {
            event::Payload::FriendRequest(_) => "friend_request",
            event::Payload::FriendAccepted(_) => "friend_accepted",
            _ => "other",
        };
        let event = Event {
            recipient_ids: vec![recipient.to_string()],
            payload: Some(payload),
            ..Event::default()
        };
        match tokio::time::timeout(self.notify_timeout, bus.send(vec![event])).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, event = kind, %recipient, "friend notification not published");
                metrics::counter!("beehive_social_notify_failures_total").increment(1);
            }
            Err(_) => {
                tracing::warn!(event = kind, %recipient, timeout = ?self.notify_timeout, "friend notification timed out");
                metrics::counter!("beehive_social_notify_failures_total").increment(1);
            }
        }
    }
}

fn already_pending() -> Error {
    Error::AlreadyExists("a friend request to this user is already pending".into())
}

/// The stored status of a row; a value outside the schema's CHECK is a bug.
fn stored_status(row: &RequestRow) -> Result<StoredStatus> {
    StoredStatus::from_code(row.status).ok_or_else(|| {
        Error::internal(format!(
            "friend request {} has unknown status {}",
            row.id, row.status
        ))
    })
}

fn effective(row: &RequestRow, now: DateTime<Utc>) -> Result<FriendRequestStatus> {
    Ok(friends::effective_status(
        stored_status(row)?,
        row.created_at,
        now,
    ))
}

/// The wire form of a request.
pub fn to_proto(row: &RequestRow, status: FriendRequestStatus) -> FriendRequest {
    FriendRequest {
        id: row.id.to_string(),
        from_user_id: row.from_user_id.to_string(),
        to_user_id: row.to_user_id.to_string(),
        message: row.message.clone(),
        status: status as i32,
        created_at: Some(to_timestamp(row.created_at)),
    }
}

/// Routes events to the gateway instances holding their recipients (through the
/// presence service) and publishes them with broker confirms.
pub struct Notifier {
    bus: EventBus,
}

impl Notifier {
    /// A notifier publishing on `bus`.
    pub fn new(bus: EventBus) -> Self {
        Self { bus }
    }

    /// Publishes `events` to every gateway instance holding one of their recipients.
    /// Recipients with no live connection are skipped: they see the change when they
    /// list.
    pub async fn send(&self, events: Vec<Event>) -> Result<()> {
        self.bus.send(events).await
    }
}
