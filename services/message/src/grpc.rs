//! The gRPC surface of the message service: decode and validate requests, apply the
//! rules of [`crate::conversation`], call the store, encode answers. No SQL here.

use std::collections::HashMap;
use std::sync::Arc;

use beehive_common::Error;
use beehive_common::events::EventBus;
use beehive_common::grpc::Retry;
use beehive_proto::v1::event::Payload;
use beehive_proto::v1::message_service_server::MessageService;
use beehive_proto::v1::presence_service_client::PresenceServiceClient;
use beehive_proto::v1::user_service_client::UserServiceClient;
use beehive_proto::v1::{
    AddMembersRequest, ConversationResponse, CreateGroupRequest, Event,
    FilterConversationPeersRequest, FilterConversationPeersResponse, GetConversationRequest,
    ListConversationsRequest, ListConversationsResponse, ListMessagesRequest, ListMessagesResponse,
    ListReceiptsRequest, ListReceiptsResponse, MarkRequest, MarkResponse, NotifyTypingRequest,
    NotifyTypingResponse, PageResponse, RemoveMemberRequest, RemoveMemberResponse,
    SendMessageRequest, SendMessageResponse, SyncRequest, SyncResponse, TypingEvent,
    UpdateGroupRequest, UsersExistRequest, list_messages_request, send_message_request,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::conversation::{
    self as rules, Anchor, ListCursor, MAX_GROUP_MEMBERS, MAX_PEER_CANDIDATES, MAX_SYNC_BYTES,
    MAX_SYNC_CURSORS, parse_id, parse_ids, to_i64, to_u64,
};
use crate::sender::Sender;
use crate::store::{Mark, SendOutcome, Store};
use crate::{relay, view};
use beehive_common::grpc::ClientChannel;

/// The MessageService implementation.
#[derive(Clone)]
pub struct MessageApi {
    store: Store,
    sender: Sender,
    users: UserServiceClient<ClientChannel>,
    presence: PresenceServiceClient<ClientChannel>,
    bus: Arc<EventBus>,
    retry: Retry,
}

impl MessageApi {
    /// The service over `store`, storing sends through `sender` (group commit),
    /// checking users with `users`, and publishing transient
    /// events (typing) through `bus` to the gateways `presence` names.
    pub fn new(
        store: Store,
        sender: Sender,
        users: UserServiceClient<ClientChannel>,
        presence: PresenceServiceClient<ClientChannel>,
        bus: Arc<EventBus>,
    ) -> Self {
        Self {
            store,
            sender,
            users,
            presence,
            bus,
            retry: Retry::default(),
        }
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

    async fn view(&self, user: Uuid, conversation_id: Uuid) -> Result<ConversationResponse, Error> {
        let view = self
            .store
            .conversation(user, conversation_id)
            .await?
            .ok_or_else(not_found)?;
        Ok(ConversationResponse {
            conversation: Some(view::conversation(&view)),
        })
    }

    async fn create_group(&self, r: CreateGroupRequest) -> Result<ConversationResponse, Error> {
        let owner = parse_id("owner_id", &r.owner_id)?;
        let name = rules::group_name(&r.name)?;
        let others = parse_ids("member_ids", &r.member_ids, MAX_GROUP_MEMBERS)?;
        let members = rules::new_group_members(owner, &others)?;
        self.require_users("member_ids", &members).await?;
        let id = Uuid::now_v7();
        self.store.create_group(id, owner, &name, &members).await?;
        tracing::info!(conversation_id = %id, owner_id = %owner, members = members.len(), "group created");
        self.view(owner, id).await
    }

    async fn update_group(&self, r: UpdateGroupRequest) -> Result<ConversationResponse, Error> {
        let user = parse_id("user_id", &r.user_id)?;
        let conversation = parse_id("conversation_id", &r.conversation_id)?;
        let name = r.name.as_deref().map(rules::group_name).transpose()?;
        let avatar = r.avatar.as_deref().map(rules::avatar).transpose()?;
        if name.is_some() || avatar.is_some() {
            self.store
                .update_group(user, conversation, name.as_deref(), avatar.as_deref())
                .await?;
        }
        self.view(user, conversation).await
    }

    async fn add_members(&self, r: AddMembersRequest) -> Result<ConversationResponse, Error> {
        let user = parse_id("user_id", &r.user_id)?;
        let conversation = parse_id("conversation_id", &r.conversation_id)?;
        let new_members = parse_ids("user_ids", &r.user_ids, MAX_GROUP_MEMBERS)?;
        if new_members.is_empty() {
            return Err(Error::invalid("user_ids", "user_ids must not be empty"));
        }
        // Membership first, so a non-member learns nothing about users either.
        if self.store.membership(user, conversation).await?.is_none() {
            return Err(not_found());
        }
        self.require_users("user_ids", &new_members).await?;
        let added = self
            .store
            .add_members(user, conversation, &new_members)
            .await?;
        tracing::info!(conversation_id = %conversation, user_id = %user, added, "members added");
        self.view(user, conversation).await
    }

    async fn remove_member(&self, r: RemoveMemberRequest) -> Result<RemoveMemberResponse, Error> {
        let actor = parse_id("user_id", &r.user_id)?;
        let conversation = parse_id("conversation_id", &r.conversation_id)?;
        let member = parse_id("member_id", &r.member_id)?;
        self.store
            .remove_member(actor, conversation, member, |owner| {
                rules::may_remove(actor, owner, member)
            })
            .await?;
        tracing::info!(conversation_id = %conversation, user_id = %actor, member_id = %member, "member removed");
        Ok(RemoveMemberResponse {})
    }

    async fn list_conversations(
        &self,
        r: ListConversationsRequest,
    ) -> Result<ListConversationsResponse, Error> {
        let user = parse_id("user_id", &r.user_id)?;
        let page = r.page.unwrap_or_default();
        let limit = rules::page_limit(page.limit);
        let cursor = ListCursor::decode(&page.cursor)?;
        let mut views = self.store.conversations(user, cursor, limit + 1).await?;
        let more = views.len() > limit as usize;
        views.truncate(limit as usize);
        let next_cursor = match (more, views.last()) {
            (true, Some(last)) => ListCursor {
                sort_at_micros: last.row.conversation.sort_at.timestamp_micros(),
                id: last.row.conversation.id,
            }
            .encode(),
            _ => String::new(),
        };
        Ok(ListConversationsResponse {
            conversations: views.iter().map(view::conversation).collect(),
            page: Some(PageResponse { next_cursor }),
        })
    }

    async fn send_message(&self, r: SendMessageRequest) -> Result<SendMessageResponse, Error> {
        let sender = parse_id("sender_id", &r.sender_id)?;
        let message = rules::new_message(
            sender,
            r.client_msg_id,
            r.msg_type,
            r.content,
            r.file_id.as_deref(),
            r.device_id,
        )?;
        let conversation = match r.target {
            Some(send_message_request::Target::ConversationId(id)) => {
                parse_id("conversation_id", &id)?
            }
            Some(send_message_request::Target::ToUserId(to)) => {
                let to = parse_id("to_user_id", &to)?;
                let (low, high) = rules::direct_pair(sender, to)?;
                self.store.direct_conversation(low, high).await?
            }
            None => {
                return Err(Error::bad_request(
                    "conversation_id or to_user_id is required",
                ));
            }
        };
        let outcome = self
            .sender
            .send(conversation, Uuid::now_v7(), message)
            .await?;
        let (row, duplicate) = match outcome {
            SendOutcome::Stored(row) => {
                metrics::counter!("beehive_messages_stored_total").increment(1);
                (row, false)
            }
            SendOutcome::Duplicate(row) => {
                tracing::debug!(sender_id = %sender, client_msg_id = %row.client_msg_id, "duplicate send");
                (row, true)
            }
        };
        Ok(SendMessageResponse {
            message: Some(view::message(&row)),
            duplicate,
        })
    }

    async fn list_messages(&self, r: ListMessagesRequest) -> Result<ListMessagesResponse, Error> {
        let user = parse_id("user_id", &r.user_id)?;
        let conversation = parse_id("conversation_id", &r.conversation_id)?;
        let join_seq = self
            .store
            .membership(user, conversation)
            .await?
            .ok_or_else(not_found)?;
        let anchor = match r.anchor {
            Some(list_messages_request::Anchor::AfterSeq(s)) => Anchor::After(s),
            Some(list_messages_request::Anchor::BeforeSeq(s)) => Anchor::Before(s),
            None => Anchor::Latest,
        };
        let window = rules::history_window(anchor, to_u64(join_seq), r.limit);
        let rows = self.store.history(conversation, window).await?;
        Ok(ListMessagesResponse {
            messages: rows.iter().map(view::message).collect(),
        })
    }

    async fn sync(&self, r: SyncRequest) -> Result<SyncResponse, Error> {
        let user = parse_id("user_id", &r.user_id)?;
        if r.cursors.len() > MAX_SYNC_CURSORS {
            return Err(Error::invalid(
                "cursors",
                format!("at most {MAX_SYNC_CURSORS} cursors"),
            ));
        }
        let mut cursors = HashMap::with_capacity(r.cursors.len());
        for (conversation, seq) in &r.cursors {
            cursors.insert(parse_id("cursors", conversation)?, *seq);
        }
        let memberships = self.store.sync_memberships(user).await?;
        let mut plan = rules::plan_sync(&memberships, &cursors, r.limit);
        let mut rows = self.store.sync_messages(&plan.windows).await?;
        let sizes: Vec<(Uuid, u64, usize)> = rows
            .iter()
            .map(|m| (m.conversation_id, to_u64(m.seq), m.content.len() + 200))
            .collect();
        let (keep, cut) = rules::cut_sync(&sizes, &mut plan.cursors, MAX_SYNC_BYTES);
        rows.truncate(keep);
        Ok(SyncResponse {
            messages: rows.iter().map(view::message).collect(),
            cursors: plan
                .cursors
                .into_iter()
                .map(|(id, seq)| (id.to_string(), seq))
                .collect(),
            has_more: plan.has_more || cut,
        })
    }

    async fn mark(&self, r: MarkRequest, mark: Mark) -> Result<MarkResponse, Error> {
        let user = parse_id("user_id", &r.user_id)?;
        let conversation = parse_id("conversation_id", &r.conversation_id)?;
        let receipt = self
            .store
            .mark(user, conversation, to_i64(r.seq), mark)
            .await?
            .ok_or_else(not_found)?;
        Ok(MarkResponse {
            receipt: Some(view::receipt(&receipt)),
        })
    }

    async fn list_receipts(&self, r: ListReceiptsRequest) -> Result<ListReceiptsResponse, Error> {
        let user = parse_id("user_id", &r.user_id)?;
        let conversation = parse_id("conversation_id", &r.conversation_id)?;
        let receipts = self
            .store
            .receipts(user, conversation)
            .await?
            .ok_or_else(not_found)?;
        Ok(ListReceiptsResponse {
            receipts: receipts.iter().map(view::receipt).collect(),
        })
    }

    /// Typing is transient: published straight through the event bus (routed by
    /// presence), never stored; only members currently online get it.
    async fn notify_typing(&self, r: NotifyTypingRequest) -> Result<NotifyTypingResponse, Error> {
        let user = parse_id("user_id", &r.user_id)?;
        let conversation = parse_id("conversation_id", &r.conversation_id)?;
        let members = self
            .store
            .members(user, conversation)
            .await?
            .ok_or_else(not_found)?;
        let recipient_ids: Vec<String> = members
            .iter()
            .filter(|m| **m != user)
            .map(Uuid::to_string)
            .collect();
        if !recipient_ids.is_empty() {
            let event = Event {
                recipient_ids,
                exclude_device_user_id: String::new(),
                exclude_device_id: String::new(),
                payload: Some(Payload::Typing(TypingEvent {
                    conversation_id: conversation.to_string(),
                    user_id: user.to_string(),
                })),
            };
            let routes = relay::route_users(&self.presence, event.recipient_ids.clone()).await?;
            let routed = relay::split_by_instance(&event, &routes);
            self.bus.publish(&routed).await?;
        }
        Ok(NotifyTypingResponse {})
    }

    async fn filter_peers(
        &self,
        r: FilterConversationPeersRequest,
    ) -> Result<FilterConversationPeersResponse, Error> {
        let user = parse_id("user_id", &r.user_id)?;
        let candidates = parse_ids("candidate_ids", &r.candidate_ids, MAX_PEER_CANDIDATES)?;
        let peers = self.store.conversation_peers(user, &candidates).await?;
        Ok(FilterConversationPeersResponse {
            peer_ids: peers.iter().map(Uuid::to_string).collect(),
        })
    }
}

fn not_found() -> Error {
    Error::NotFound("conversation not found".to_owned())
}

fn answer<T>(result: Result<T, Error>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl MessageService for MessageApi {
    async fn create_group(
        &self,
        request: Request<CreateGroupRequest>,
    ) -> Result<Response<ConversationResponse>, Status> {
        answer(MessageApi::create_group(self, request.into_inner()).await)
    }

    async fn update_group(
        &self,
        request: Request<UpdateGroupRequest>,
    ) -> Result<Response<ConversationResponse>, Status> {
        answer(MessageApi::update_group(self, request.into_inner()).await)
    }

    async fn add_members(
        &self,
        request: Request<AddMembersRequest>,
    ) -> Result<Response<ConversationResponse>, Status> {
        answer(MessageApi::add_members(self, request.into_inner()).await)
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        answer(MessageApi::remove_member(self, request.into_inner()).await)
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        answer(MessageApi::list_conversations(self, request.into_inner()).await)
    }

    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<ConversationResponse>, Status> {
        let r = request.into_inner();
        let result = async {
            let user = parse_id("user_id", &r.user_id)?;
            let conversation = parse_id("conversation_id", &r.conversation_id)?;
            self.view(user, conversation).await
        }
        .await;
        answer(result)
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        answer(MessageApi::send_message(self, request.into_inner()).await)
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        answer(MessageApi::list_messages(self, request.into_inner()).await)
    }

    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        answer(MessageApi::sync(self, request.into_inner()).await)
    }

    async fn mark_delivered(
        &self,
        request: Request<MarkRequest>,
    ) -> Result<Response<MarkResponse>, Status> {
        answer(self.mark(request.into_inner(), Mark::Delivered).await)
    }

    async fn mark_read(
        &self,
        request: Request<MarkRequest>,
    ) -> Result<Response<MarkResponse>, Status> {
        answer(self.mark(request.into_inner(), Mark::Read).await)
    }

    async fn list_receipts(
        &self,
        request: Request<ListReceiptsRequest>,
    ) -> Result<Response<ListReceiptsResponse>, Status> {
        answer(MessageApi::list_receipts(self, request.into_inner()).await)
    }

    async fn notify_typing(
        &self,
        request: Request<NotifyTypingRequest>,
    ) -> Result<Response<NotifyTypingResponse>, Status> {
        answer(MessageApi::notify_typing(self, request.into_inner()).await)
    }

    async fn filter_conversation_peers(
        &self,
        request: Request<FilterConversationPeersRequest>,
    ) -> Result<Response<FilterConversationPeersResponse>, Status> {
        answer(self.filter_peers(request.into_inner()).await)
    }
}
