//! The message service's use cases, one method per RPC: each applies the rules of
//! [`crate::conversation`], orchestrates the store (owning the transactions that span
//! several statements), the group-commit [`Sender`], the user service and the event
//! bus, and chooses what the API says when something is refused or absent.
//! [`crate::grpc`] decodes requests into the typed arguments here and encodes what
//! comes back; this is the only caller of [`crate::store`] besides the sender and
//! the relay, which are parts of this layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use beehive_common::Error;
use beehive_common::events::EventBus;
use beehive_common::grpc::{ClientChannel, Retry};
use beehive_common::routing;
use beehive_proto::v1::event::Payload;
use beehive_proto::v1::file_service_client::FileServiceClient;
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use beehive_proto::v1::user_service_client::UserServiceClient;
use beehive_proto::v1::{AuthorizeFileRequest, Event, TypingEvent, UsersExistRequest};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::conversation::{
    self as rules, Anchor, ListCursor, MAX_GROUP_MEMBERS, MAX_SYNC_BYTES, to_i64, to_u64,
};
use crate::sender::Sender;
use crate::store::{
    ConversationView, KIND_GROUP, ListAfter, Mark, MessageRow, ReceiptRow, SendOutcome, Store,
};

/// A send the batch left without an answer (never expected: one outcome per send).
fn unanswered() -> Error {
    Error::internal("a send was not answered")
}

/// Where a send goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendTarget {
    /// An existing conversation.
    Conversation(Uuid),
    /// The direct conversation with this user, created on first use.
    User(Uuid),
}

/// A send as the client asked for it, before the message rules ran.
#[derive(Clone, Debug)]
pub struct SendRequest {
    pub sender: Uuid,
    pub target: SendTarget,
    pub client_msg_id: String,
    pub msg_type: i32,
    pub content: String,
    pub file_id: Option<String>,
    pub device_id: String,
}

/// A stored message and whether it had been stored before (a resend).
#[derive(Clone, Debug)]
pub struct Sent {
    pub message: MessageRow,
    pub duplicate: bool,
}

/// A page of conversations and the cursor of the next one (empty at the end).
#[derive(Clone, Debug)]
pub struct ConversationPage {
    pub conversations: Vec<ConversationView>,
    pub next_cursor: String,
}

/// A sync answer: the gap messages, each conversation's new cursor, and whether the
/// client should sync again.
#[derive(Clone, Debug)]
pub struct Synced {
    pub messages: Vec<MessageRow>,
    pub cursors: HashMap<Uuid, u64>,
    pub has_more: bool,
}

/// Most direct pairs remembered in memory before the cache starts over.
const DIRECT_CACHE_MAX: usize = 100_000;

/// Direct conversation ids by user pair (`low < high`). They never change or
/// disappear, so a send to `to_user_id` skips the lookup round trip once a pair is
/// known; no invalidation is needed.
#[derive(Clone, Default)]
struct DirectCache {
    ids: Arc<Mutex<HashMap<(Uuid, Uuid), Uuid>>>,
}

impl DirectCache {
    fn get(&self, low: Uuid, high: Uuid) -> Option<Uuid> {
        self.ids.lock().ok()?.get(&(low, high)).copied()
    }

    fn insert(&self, low: Uuid, high: Uuid, id: Uuid) {
        if let Ok(mut ids) = self.ids.lock() {
            if ids.len() >= DIRECT_CACHE_MAX {
                ids.clear();
            }
            ids.insert((low, high), id);
        }
    }
}

/// The message service's use cases.
#[derive(Clone)]
pub struct MessageService {
    store: Store,
    sender: Sender,
    users: UserServiceClient<ClientChannel>,
    presence: PresenceServiceClient<ClientChannel>,
    /// Asked whether a sender may attach a file (API.md: only a file it may read).
    files: FileServiceClient<ClientChannel>,
    bus: Arc<EventBus>,
    retry: Retry,
    direct: DirectCache,
}

fn conversation_not_found() -> Error {
    Error::NotFound("conversation not found".to_owned())
}

fn not_a_group() -> Error {
    Error::invalid(
        "conversation_id",
        "this is a direct conversation, not a group",
    )
}

impl MessageService {
    /// The use cases over `store`, storing sends through `sender` (group commit),
    /// checking users with `users`, and publishing transient events (typing) through
    /// `bus` to the gateways `presence` names.
    pub fn new(
        store: Store,
        sender: Sender,
        users: UserServiceClient<ClientChannel>,
        presence: PresenceServiceClient<ClientChannel>,
        files: FileServiceClient<ClientChannel>,
        bus: Arc<EventBus>,
    ) -> Self {
        Self {
            store,
            sender,
            users,
            presence,
            files,
            bus,
            retry: Retry::default(),
            direct: DirectCache::default(),
        }
    }

    /// Creates a group owned by `owner` with `others` (the owner is added first).
    pub async fn create_group(
        &self,
        owner: Uuid,
        name: &str,
        others: &[Uuid],
    ) -> Result<ConversationView, Error> {
        let name = rules::group_name(name)?;
        let members = rules::new_group_members(owner, others)?;
        self.require_users("member_ids", &members).await?;
        let id = Uuid::now_v7();
        self.store.create_group(id, owner, &name, &members).await?;
        tracing::info!(conversation_id = %id, owner_id = %owner, members = members.len(), "group created");
        self.get_conversation(owner, id).await
    }

    /// Renames a group or changes its avatar (any member may).
    pub async fn update_group(
        &self,
        user: Uuid,
        conversation: Uuid,
        name: Option<&str>,
        avatar: Option<&str>,
    ) -> Result<ConversationView, Error> {
        let name = name.map(rules::group_name).transpose()?;
        let avatar = avatar.map(rules::avatar).transpose()?;
        if (name.is_some() || avatar.is_some())
            && !self
                .store
                .update_group(user, conversation, name.as_deref(), avatar.as_deref())
                .await?
        {
            return Err(match self.store.membership(user, conversation).await? {
                Some(_) => not_a_group(),
                None => conversation_not_found(),
            });
        }
        self.get_conversation(user, conversation).await
    }

    /// Adds members to a group (any member may). New members start at the current
    /// last_seq: they see and count only later messages.
    pub async fn add_members(
        &self,
        user: Uuid,
        conversation: Uuid,
        new_members: &[Uuid],
    ) -> Result<ConversationView, Error> {
        if new_members.is_empty() {
            return Err(Error::invalid("user_ids", "user_ids must not be empty"));
        }
        // Membership first, so a non-member learns nothing about users either.
        if self.store.membership(user, conversation).await?.is_none() {
            return Err(conversation_not_found());
        }
        self.require_users("user_ids", new_members).await?;
        let mut tx = self.store.begin().await?;
        let locked = Store::tx_lock_for_member(&mut tx, conversation, user)
            .await?
            .ok_or_else(conversation_not_found)?;
        if locked.kind != KIND_GROUP {
            return Err(not_a_group());
        }
        let added =
            Store::tx_insert_members(&mut tx, conversation, new_members, locked.last_seq).await?;
        if !added.is_empty() {
            let total = usize::try_from(locked.member_count).unwrap_or(0) + added.len();
            if total > MAX_GROUP_MEMBERS {
                // Dropping the transaction rolls the inserts back.
                return Err(Error::invalid(
                    "user_ids",
                    format!("a group has at most {MAX_GROUP_MEMBERS} members"),
                ));
            }
            Store::tx_count_added_members(&mut tx, conversation, added.len()).await?;
            Store::tx_announce(&mut tx, conversation, None).await?;
            self.store.commit_with_outbox(tx).await?;
        }
        tracing::info!(conversation_id = %conversation, user_id = %user, added = added.len(), "members added");
        self.get_conversation(user, conversation).await
    }

    /// Removes `member` from a group: the owner removes anyone, everybody else only
    /// itself. When the owner leaves, the longest-standing remaining member becomes
    /// owner; the removed member hears of it through the announcement.
    pub async fn remove_member(
        &self,
        actor: Uuid,
        conversation: Uuid,
        member: Uuid,
    ) -> Result<(), Error> {
        let mut tx = self.store.begin().await?;
        let locked = Store::tx_lock_for_member(&mut tx, conversation, actor)
            .await?
            .ok_or_else(conversation_not_found)?;
        if locked.kind != KIND_GROUP {
            return Err(not_a_group());
        }
        if !rules::may_remove(actor, locked.owner_id, member) {
            return Err(Error::PermissionDenied(
                "only the owner may remove other members".to_owned(),
            ));
        }
        if !Store::tx_delete_member(&mut tx, conversation, member).await? {
            return Err(Error::NotFound("member not found".to_owned()));
        }
        Store::tx_count_removed_member(&mut tx, conversation, member).await?;
        Store::tx_announce(&mut tx, conversation, Some(vec![member])).await?;
        self.store.commit_with_outbox(tx).await?;
        tracing::info!(conversation_id = %conversation, user_id = %actor, member_id = %member, "member removed");
        Ok(())
    }

    /// A page of `user`'s conversations, newest activity first.
    pub async fn list_conversations(
        &self,
        user: Uuid,
        limit: u32,
        cursor: &str,
    ) -> Result<ConversationPage, Error> {
        let limit = rules::page_limit(limit);
        let after = match ListCursor::decode(cursor)? {
            Some(c) => Some(ListAfter {
                sort_at: DateTime::<Utc>::from_timestamp_micros(c.sort_at_micros)
                    .ok_or_else(|| Error::invalid("cursor", "cursor is not valid"))?,
                id: c.id,
            }),
            None => None,
        };
        let mut conversations = self.store.conversations(user, after, limit + 1).await?;
        let more = conversations.len() > limit as usize;
        conversations.truncate(limit as usize);
        let next_cursor = match (more, conversations.last()) {
            (true, Some(last)) => ListCursor {
                sort_at_micros: last.row.conversation.sort_at.timestamp_micros(),
                id: last.row.conversation.id,
            }
            .encode(),
            _ => String::new(),
        };
        Ok(ConversationPage {
            conversations,
            next_cursor,
        })
    }

    /// One conversation as `user` sees it.
    pub async fn get_conversation(
        &self,
        user: Uuid,
        conversation: Uuid,
    ) -> Result<ConversationView, Error> {
        self.store
            .conversation(user, conversation)
            .await?
            .ok_or_else(conversation_not_found)
    }

    /// Stores a message (or finds the earlier copy of a resend). API.md answers 403 to
    /// a sender outside an existing conversation, 404 when there is none.
    pub async fn send_message(&self, request: SendRequest) -> Result<Sent, Error> {
        self.send_messages(vec![Ok(request)])
            .await
            .pop()
            .unwrap_or_else(|| Err(unanswered()))
    }

    /// Stores several messages, as [`Self::send_message`] does each, in one batch
    /// when they fit (a gateway's batched call). One answer per send, in order.
    pub async fn send_messages(
        &self,
        requests: Vec<Result<SendRequest, Error>>,
    ) -> Vec<Result<Sent, Error>> {
        let prepared = futures::future::join_all(
            requests
                .into_iter()
                .map(|request| async move { self.prepare_send(request?).await }),
        )
        .await;
        let mut answers: Vec<Option<Result<Sent, Error>>> = Vec::with_capacity(prepared.len());
        let mut senders = Vec::new();
        let mut sends = Vec::new();
        for (index, send) in prepared.into_iter().enumerate() {
            match send {
                Ok((conversation, message)) => {
                    senders.push((index, message.sender_id, conversation));
                    sends.push((conversation, Uuid::now_v7(), message));
                    answers.push(None);
                }
                Err(error) => answers.push(Some(Err(error))),
            }
        }
        let outcomes = self.sender.send_all(sends).await;
        for ((index, sender, conversation), outcome) in senders.into_iter().zip(outcomes) {
            let answer = match outcome {
                Ok(outcome) => self.sent(sender, conversation, outcome).await,
                Err(error) => Err(error),
            };
            if let Some(slot) = answers.get_mut(index) {
                *slot = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(unanswered())))
            .collect()
    }

    /// Validates a send and finds its conversation.
    async fn prepare_send(
        &self,
        request: SendRequest,
    ) -> Result<(Uuid, crate::conversation::NewMessage), Error> {
        let sender = request.sender;
        let message = rules::new_message(
            sender,
            request.client_msg_id,
            request.msg_type,
            request.content,
            request.file_id.as_deref(),
            request.device_id,
        )?;
        if let Some(file) = message.file_id {
            self.authorize_file(sender, file).await?;
        }
        let conversation = match request.target {
            SendTarget::Conversation(id) => id,
            SendTarget::User(to) => {
                let (low, high) = rules::direct_pair(sender, to)?;
                self.direct_conversation(low, high).await?
            }
        };
        Ok((conversation, message))
    }

    /// The answer to a send the sender stored or refused.
    async fn sent(
        &self,
        sender: Uuid,
        conversation: Uuid,
        outcome: SendOutcome,
    ) -> Result<Sent, Error> {
        match outcome {
            SendOutcome::Stored(message) => {
                metrics::counter!("beehive_messages_stored_total").increment(1);
                Ok(Sent {
                    message,
                    duplicate: false,
                })
            }
            SendOutcome::Duplicate(message) => {
                tracing::debug!(sender_id = %sender, client_msg_id = %message.client_msg_id, "duplicate send");
                Ok(Sent {
                    message,
                    duplicate: true,
                })
            }
            SendOutcome::NotMember => Err(if self.store.conversation_exists(conversation).await? {
                Error::PermissionDenied("you are not a member of this conversation".to_owned())
            } else {
                conversation_not_found()
            }),
        }
    }

    /// A window of a conversation's history, never reaching before the caller joined.
    pub async fn list_messages(
        &self,
        user: Uuid,
        conversation: Uuid,
        anchor: Anchor,
        limit: u32,
    ) -> Result<Vec<MessageRow>, Error> {
        let join_seq = self
            .store
            .membership(user, conversation)
            .await?
            .ok_or_else(conversation_not_found)?;
        let window = rules::history_window(anchor, to_u64(join_seq), limit);
        Ok(self.store.history(conversation, window).await?)
    }

    /// The messages after the client's `cursors` (last seq seen per conversation), cut
    /// to [`MAX_SYNC_BYTES`].
    pub async fn sync(
        &self,
        user: Uuid,
        cursors: &HashMap<Uuid, u64>,
        limit: u32,
    ) -> Result<Synced, Error> {
        let memberships = self.store.sync_memberships(user).await?;
        let mut plan = rules::plan_sync(&memberships, cursors, limit);
        let mut messages = self.store.sync_messages(&plan.windows).await?;
        let sizes: Vec<(Uuid, u64, usize)> = messages
            .iter()
            .map(|m| {
                (
                    m.conversation_id,
                    to_u64(m.seq),
                    rules::sync_size(m.content.len()),
                )
            })
            .collect();
        let (keep, cut) = rules::cut_sync(&sizes, &mut plan.cursors, MAX_SYNC_BYTES);
        messages.truncate(keep);
        Ok(Synced {
            messages,
            cursors: plan.cursors,
            has_more: plan.has_more || cut,
        })
    }

    /// Moves the caller's delivered or read seq up to `seq`.
    pub async fn mark(
        &self,
        user: Uuid,
        conversation: Uuid,
        seq: u64,
        mark: Mark,
    ) -> Result<ReceiptRow, Error> {
        self.store
            .mark(user, conversation, to_i64(seq), mark)
            .await?
            .ok_or_else(conversation_not_found)
    }

    /// Every member's progress in a conversation of the caller.
    pub async fn list_receipts(
        &self,
        user: Uuid,
        conversation: Uuid,
    ) -> Result<Vec<ReceiptRow>, Error> {
        self.store
            .receipts(user, conversation)
            .await?
            .ok_or_else(conversation_not_found)
    }

    /// Typing is transient: published straight through the event bus (routed by
    /// presence), never stored; only members currently online get it.
    pub async fn notify_typing(&self, user: Uuid, conversation: Uuid) -> Result<(), Error> {
        let members = self
            .store
            .members(user, conversation)
            .await?
            .ok_or_else(conversation_not_found)?;
        let recipient_ids: Vec<String> = members
            .iter()
            .filter(|m| **m != user)
            .map(Uuid::to_string)
            .collect();
        if recipient_ids.is_empty() {
            return Ok(());
        }
        let event = Event {
            recipient_ids,
            exclude_device_user_id: String::new(),
            exclude_device_id: String::new(),
            payload: Some(Payload::Typing(TypingEvent {
                conversation_id: conversation.to_string(),
                user_id: user.to_string(),
            })),
        };
        let instances = routing::route_users(&self.presence, event.recipient_ids.clone()).await?;
        let routed = routing::split_event(&event, &instances);
        self.bus.publish(&routed).await
    }

    /// The candidates that share at least one conversation with `user`.
    pub async fn filter_conversation_peers(
        &self,
        user: Uuid,
        candidates: &[Uuid],
    ) -> Result<Vec<Uuid>, Error> {
        Ok(self.store.conversation_peers(user, candidates).await?)
    }

    /// Every conversation of `user` with the seq it joined at (it reads later seqs).
    pub async fn memberships(&self, user: Uuid) -> Result<Vec<(Uuid, u64)>, Error> {
        Ok(self
            .store
            .sync_memberships(user)
            .await?
            .into_iter()
            .map(|m| (m.conversation_id, m.join_seq))
            .collect())
    }

    /// Whether `user` may read `file` through a message of one of its conversations
    /// (sent after it joined).
    pub async fn file_visible_to(&self, user: Uuid, file: Uuid) -> Result<bool, Error> {
        Ok(self.store.file_visible_to(user, file).await?)
    }

    /// Asks the file service whether `sender` may attach `file` (and marks it shared,
    /// so its owner deleting it later keeps it for the conversation). API.md: a file
    /// the sender may not read is refused like an unknown one, 404.
    async fn authorize_file(&self, sender: Uuid, file: Uuid) -> Result<(), Error> {
        let files = self.files.clone();
        let request = AuthorizeFileRequest {
            user_id: sender.to_string(),
            file_id: file.to_string(),
            share: true,
        };
        // Idempotent (marking shared twice is marking it once): retried on unavailable.
        self.retry
            .idempotent(move || {
                let mut files = files.clone();
                let request = request.clone();
                async move { files.authorize_file(request).await }
            })
            .await
            .map_err(|status| match Error::from_status(&status) {
                Error::NotFound(_) => Error::NotFound("file not found".to_owned()),
                other => other,
            })?;
        Ok(())
    }

    /// One page of the whole history after `after` in (conversation, seq) order, cut
    /// to [`MAX_SYNC_BYTES`], and where the next page starts (`None` at the end).
    pub async fn history_page(
        &self,
        after: Option<(Uuid, u64)>,
        limit: u32,
    ) -> Result<(Vec<MessageRow>, Option<(Uuid, u64)>), Error> {
        let limit = rules::history_limit(limit);
        let mut rows = self
            .store
            .history_page(after.map(|(c, s)| (c, to_i64(s))), limit)
            .await?;
        let fetched = rows.len();
        let sizes: Vec<usize> = rows.iter().map(|r| r.content.len()).collect();
        rows.truncate(rules::history_cut(&sizes, MAX_SYNC_BYTES));
        let more = rows.len() < fetched || fetched == limit as usize;
        let next = if more {
            rows.last().map(|r| (r.conversation_id, to_u64(r.seq)))
        } else {
            None
        };
        Ok((rows, next))
    }

    /// The direct conversation of a pair, from the cache when known.
    async fn direct_conversation(&self, low: Uuid, high: Uuid) -> Result<Uuid, Error> {
        if let Some(id) = self.direct.get(low, high) {
            return Ok(id);
        }
        let id = self
            .store
            .direct_conversation(low, high)
            .await?
            .ok_or_else(|| Error::internal("direct conversation vanished after insert conflict"))?;
        self.direct.insert(low, high, id);
        Ok(id)
    }

    /// Fails with `invalid_argument` naming `field` unless every id is a user.
    async fn require_users(&self, field: &str, ids: &[Uuid]) -> Result<(), Error> {
        let user_ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        // The closure owns what it uses: borrowing `self` in it trips the compiler's
        // Send check of the generated service future.
        let users = self.users.clone();
        let request = UsersExistRequest {
            user_ids: user_ids.clone(),
        };
        let existing = self
            .retry
            .idempotent(move || {
                let mut users = users.clone();
                let request = request.clone();
                async move { users.users_exist(request).await }
            })
            .await
            .map_err(|s| Error::from_status(&s))?
            .into_inner()
            .existing_ids;
        let missing = user_ids.iter().filter(|id| !existing.contains(id)).count();
        if missing > 0 {
            return Err(Error::invalid(
                field,
                format!("{missing} of the given users do not exist"),
            ));
        }
        Ok(())
    }
}
