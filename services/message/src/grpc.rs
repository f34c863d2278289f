//! The gRPC surface of the message service: decode requests into the typed arguments
//! of [`MessageService`], call it, encode what it returns ([`crate::view`]). No SQL
//! and no rules here.

use std::collections::HashMap;

use beehive_common::Error;
use beehive_common::id::parse_id;
use beehive_proto::v1::message_service_server::MessageService as MessageRpc;
use beehive_proto::v1::{
    AddMembersRequest, ConversationResponse, CreateGroupRequest, FileVisibleToRequest,
    FileVisibleToResponse, FilterConversationPeersRequest, FilterConversationPeersResponse,
    GetConversationRequest, HistoryPosition, ListConversationsRequest, ListConversationsResponse,
    ListHistoryRequest, ListHistoryResponse, ListMembershipsRequest, ListMembershipsResponse,
    ListMessagesRequest, ListMessagesResponse, ListReceiptsRequest, ListReceiptsResponse,
    MarkRequest, MarkResponse, Membership, NotifyTypingRequest, NotifyTypingResponse, PageResponse,
    RemoveMemberRequest, RemoveMemberResponse, SendMessageRequest, SendMessageResponse,
    SendMessagesRequest, SendMessagesResponse, SendResult, SyncRequest, SyncResponse,
    UpdateGroupRequest, list_messages_request, send_message_request, send_result,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::conversation::{
    Anchor, MAX_GROUP_MEMBERS, MAX_PEER_CANDIDATES, MAX_SEND_BATCH, MAX_SYNC_CURSORS, parse_ids,
};
use crate::service::{MessageService, SendRequest, SendTarget, Sent};
use crate::store::{ConversationView, Mark};
use crate::view;

/// The tonic implementation of `beehive.v1.MessageService` over [`MessageService`].
#[derive(Clone)]
pub struct MessageApi {
    service: MessageService,
}

impl MessageApi {
    /// Serves `service`.
    pub fn new(service: MessageService) -> Self {
        Self { service }
    }
}

/// One send, as SendMessage and each item of SendMessages carry it.
fn send_request(r: SendMessageRequest) -> Result<SendRequest, Error> {
    Ok(SendRequest {
        sender: parse_id("sender_id", &r.sender_id)?,
        target: send_target(r.target)?,
        client_msg_id: r.client_msg_id,
        msg_type: r.msg_type,
        content: r.content,
        file_id: r.file_id,
        device_id: r.device_id,
    })
}

fn send_response(sent: &Sent) -> SendMessageResponse {
    SendMessageResponse {
        message: Some(view::message(&sent.message)),
        duplicate: sent.duplicate,
    }
}

fn answer<T>(result: Result<T, Error>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

fn conversation_response(view: &ConversationView) -> ConversationResponse {
    ConversationResponse {
        conversation: Some(view::conversation(view)),
    }
}

/// The user and conversation ids most requests carry.
fn member_of(user_id: &str, conversation_id: &str) -> Result<(Uuid, Uuid), Error> {
    Ok((
        parse_id("user_id", user_id)?,
        parse_id("conversation_id", conversation_id)?,
    ))
}

fn send_target(target: Option<send_message_request::Target>) -> Result<SendTarget, Error> {
    match target {
        Some(send_message_request::Target::ConversationId(id)) => {
            Ok(SendTarget::Conversation(parse_id("conversation_id", &id)?))
        }
        Some(send_message_request::Target::ToUserId(to)) => {
            Ok(SendTarget::User(parse_id("to_user_id", &to)?))
        }
        None => Err(Error::bad_request(
            "conversation_id or to_user_id is required",
        )),
    }
}

fn sync_cursors(cursors: &HashMap<String, u64>) -> Result<HashMap<Uuid, u64>, Error> {
    if cursors.len() > MAX_SYNC_CURSORS {
        return Err(Error::invalid(
            "cursors",
            format!("at most {MAX_SYNC_CURSORS} cursors"),
        ));
    }
    cursors
        .iter()
        .map(|(conversation, seq)| Ok((parse_id("cursors", conversation)?, *seq)))
        .collect()
}

impl MessageApi {
    async fn mark(&self, r: MarkRequest, mark: Mark) -> Result<MarkResponse, Error> {
        let (user, conversation) = member_of(&r.user_id, &r.conversation_id)?;
        let receipt = self.service.mark(user, conversation, r.seq, mark).await?;
        Ok(MarkResponse {
            receipt: Some(view::receipt(&receipt)),
        })
    }
}

#[tonic::async_trait]
impl MessageRpc for MessageApi {
    async fn create_group(
        &self,
        request: Request<CreateGroupRequest>,
    ) -> Result<Response<ConversationResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let owner = parse_id("owner_id", &r.owner_id)?;
                let others = parse_ids("member_ids", &r.member_ids, MAX_GROUP_MEMBERS)?;
                let view = self.service.create_group(owner, &r.name, &others).await?;
                Ok(conversation_response(&view))
            }
            .await,
        )
    }

    async fn update_group(
        &self,
        request: Request<UpdateGroupRequest>,
    ) -> Result<Response<ConversationResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let (user, conversation) = member_of(&r.user_id, &r.conversation_id)?;
                let view = self
                    .service
                    .update_group(user, conversation, r.name.as_deref(), r.avatar.as_deref())
                    .await?;
                Ok(conversation_response(&view))
            }
            .await,
        )
    }

    async fn add_members(
        &self,
        request: Request<AddMembersRequest>,
    ) -> Result<Response<ConversationResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let (user, conversation) = member_of(&r.user_id, &r.conversation_id)?;
                let new_members = parse_ids("user_ids", &r.user_ids, MAX_GROUP_MEMBERS)?;
                let view = self
                    .service
                    .add_members(user, conversation, &new_members)
                    .await?;
                Ok(conversation_response(&view))
            }
            .await,
        )
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let (actor, conversation) = member_of(&r.user_id, &r.conversation_id)?;
                let member = parse_id("member_id", &r.member_id)?;
                self.service
                    .remove_member(actor, conversation, member)
                    .await?;
                Ok(RemoveMemberResponse {})
            }
            .await,
        )
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let user = parse_id("user_id", &r.user_id)?;
                let page = r.page.unwrap_or_default();
                let page = self
                    .service
                    .list_conversations(user, page.limit, &page.cursor)
                    .await?;
                Ok(ListConversationsResponse {
                    conversations: page.conversations.iter().map(view::conversation).collect(),
                    page: Some(PageResponse {
                        next_cursor: page.next_cursor,
                    }),
                })
            }
            .await,
        )
    }

    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<ConversationResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let (user, conversation) = member_of(&r.user_id, &r.conversation_id)?;
                let view = self.service.get_conversation(user, conversation).await?;
                Ok(conversation_response(&view))
            }
            .await,
        )
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        answer(
            async {
                let send = send_request(request.into_inner())?;
                let sent = self.service.send_message(send).await?;
                Ok(send_response(&sent))
            }
            .await,
        )
    }

    async fn send_messages(
        &self,
        request: Request<SendMessagesRequest>,
    ) -> Result<Response<SendMessagesResponse>, Status> {
        let sends = request.into_inner().sends;
        if sends.len() > MAX_SEND_BATCH {
            return answer(Err(Error::invalid(
                "sends",
                format!("at most {MAX_SEND_BATCH} sends per call"),
            )));
        }
        // All at once: the sender stores the sends of one call in one statement.
        let requests = sends.into_iter().map(send_request).collect();
        let results = self.service.send_messages(requests).await;
        let results = results
            .into_iter()
            .map(|result| SendResult {
                result: Some(match result {
                    Ok(sent) => send_result::Result::Sent(send_response(&sent)),
                    Err(error) => send_result::Result::Error(error.into_item_status()),
                }),
            })
            .collect();
        answer(Ok(SendMessagesResponse { results }))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let (user, conversation) = member_of(&r.user_id, &r.conversation_id)?;
                let anchor = match r.anchor {
                    Some(list_messages_request::Anchor::AfterSeq(s)) => Anchor::After(s),
                    Some(list_messages_request::Anchor::BeforeSeq(s)) => Anchor::Before(s),
                    None => Anchor::Latest,
                };
                let messages = self
                    .service
                    .list_messages(user, conversation, anchor, r.limit)
                    .await?;
                Ok(ListMessagesResponse {
                    messages: messages.iter().map(view::message).collect(),
                })
            }
            .await,
        )
    }

    async fn sync(&self, request: Request<SyncRequest>) -> Result<Response<SyncResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let user = parse_id("user_id", &r.user_id)?;
                let cursors = sync_cursors(&r.cursors)?;
                let synced = self.service.sync(user, &cursors, r.limit).await?;
                Ok(SyncResponse {
                    messages: synced.messages.iter().map(view::message).collect(),
                    cursors: synced
                        .cursors
                        .into_iter()
                        .map(|(id, seq)| (id.to_string(), seq))
                        .collect(),
                    has_more: synced.has_more,
                })
            }
            .await,
        )
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
        let r = request.into_inner();
        answer(
            async {
                let (user, conversation) = member_of(&r.user_id, &r.conversation_id)?;
                let receipts = self.service.list_receipts(user, conversation).await?;
                Ok(ListReceiptsResponse {
                    receipts: receipts.iter().map(view::receipt).collect(),
                })
            }
            .await,
        )
    }

    async fn notify_typing(
        &self,
        request: Request<NotifyTypingRequest>,
    ) -> Result<Response<NotifyTypingResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let (user, conversation) = member_of(&r.user_id, &r.conversation_id)?;
                self.service.notify_typing(user, conversation).await?;
                Ok(NotifyTypingResponse {})
            }
            .await,
        )
    }

    async fn filter_conversation_peers(
        &self,
        request: Request<FilterConversationPeersRequest>,
    ) -> Result<Response<FilterConversationPeersResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let user = parse_id("user_id", &r.user_id)?;
                let candidates = parse_ids("candidate_ids", &r.candidate_ids, MAX_PEER_CANDIDATES)?;
                let peers = self
                    .service
                    .filter_conversation_peers(user, &candidates)
                    .await?;
                Ok(FilterConversationPeersResponse {
                    peer_ids: peers.iter().map(Uuid::to_string).collect(),
                })
            }
            .await,
        )
    }

    async fn list_history(
        &self,
        request: Request<ListHistoryRequest>,
    ) -> Result<Response<ListHistoryResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let after = r
                    .after
                    .map(|p| {
                        parse_id("after.conversation_id", &p.conversation_id).map(|c| (c, p.seq))
                    })
                    .transpose()?;
                let (rows, next) = self.service.history_page(after, r.limit).await?;
                Ok(ListHistoryResponse {
                    messages: rows.iter().map(view::message).collect(),
                    next_after: next.map(|(conversation, seq)| HistoryPosition {
                        conversation_id: conversation.to_string(),
                        seq,
                    }),
                })
            }
            .await,
        )
    }

    async fn list_memberships(
        &self,
        request: Request<ListMembershipsRequest>,
    ) -> Result<Response<ListMembershipsResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let user = parse_id("user_id", &r.user_id)?;
                let memberships = self.service.memberships(user).await?;
                Ok(ListMembershipsResponse {
                    memberships: memberships
                        .into_iter()
                        .map(|(conversation_id, join_seq)| Membership {
                            conversation_id: conversation_id.to_string(),
                            join_seq,
                        })
                        .collect(),
                })
            }
            .await,
        )
    }

    async fn file_visible_to(
        &self,
        request: Request<FileVisibleToRequest>,
    ) -> Result<Response<FileVisibleToResponse>, Status> {
        let r = request.into_inner();
        answer(
            async {
                let user = parse_id("user_id", &r.user_id)?;
                let file = parse_id("file_id", &r.file_id)?;
                let visible = self.service.file_visible_to(user, file).await?;
                Ok(FileVisibleToResponse { visible })
            }
            .await,
        )
    }
}
