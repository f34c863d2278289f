//! `/api/v1/groups/*` and `/api/v1/conversations/*`: groups and their membership,
//! the caller's conversations, history, receipts and read state (the message
//! service). Non-members get 404 for a conversation and everything under it; the
//! message service answers that way.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use beehive_common::Error;
use beehive_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::{self, validate};
use crate::auth::AuthUser;
use crate::http::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::wire::model::{Conversation, ConversationResponse, ErrorResponse, Message};

/// Most user ids accepted in one request (API.md's group size limit).
const MAX_MEMBERS: usize = 2000;

/// `POST /groups` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateGroupRequest {
    pub name: String,
    /// Other members (any existing users); the creator is added as owner.
    #[serde(default)]
    pub member_ids: Vec<String>,
}

/// `PATCH /groups/{id}` body; absent fields stay unchanged.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateGroupRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub avatar: Option<String>,
}

/// `POST /groups/{id}/members` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddMembersRequest {
    pub user_ids: Vec<String>,
}

/// `POST /conversations/{id}/read` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReadRequest {
    pub seq: u64,
}

/// `{conversations: [...], next_cursor}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationsResponse {
    pub conversations: Vec<Conversation>,
    pub next_cursor: Option<String>,
}

/// `{messages: [...]}`, ascending by seq.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesResponse {
    pub messages: Vec<Message>,
}

/// One member's delivery and read position.
#[derive(Debug, Serialize, ToSchema)]
pub struct Receipt {
    pub user_id: String,
    pub delivered_seq: u64,
    pub read_seq: u64,
}

/// `{receipts: [...]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptsResponse {
    pub receipts: Vec<Receipt>,
}

/// Paging query.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// `GET /conversations/{id}/messages` query.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    pub after_seq: Option<u64>,
    pub before_seq: Option<u64>,
    pub limit: Option<u32>,
}

fn check_ids(field: &str, ids: &[String]) -> Result<(), Error> {
    if ids.len() > MAX_MEMBERS {
        return Err(Error::invalid(
            field,
            format!("{field} lists more than {MAX_MEMBERS} users"),
        ));
    }
    ids.iter().try_for_each(|id| validate::check_id(field, id))
}

fn conversation(response: pb::ConversationResponse) -> Result<Json<ConversationResponse>, Error> {
    Ok(Json(ConversationResponse {
        conversation: Conversation::required(response.conversation)?,
    }))
}

/// Creates a group; the caller is its owner and a member.
#[utoipa::path(post, path = "/api/v1/groups", tag = "conversations", security(("bearer" = [])),
    request_body = CreateGroupRequest,
    responses((status = 201, body = ConversationResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse)))]
pub async fn create_group(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiJson(body): ApiJson<CreateGroupRequest>,
) -> Result<Response, Error> {
    check_ids("member_ids", &body.member_ids)?;
    let response = state
        .clients
        .create_group(pb::CreateGroupRequest {
            owner_id: claims.user_id,
            name: body.name,
            member_ids: body.member_ids,
        })
        .await?;
    Ok((StatusCode::CREATED, conversation(response)?).into_response())
}

/// Renames a group or changes its avatar (any member).
#[utoipa::path(patch, path = "/api/v1/groups/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id")),
    request_body = UpdateGroupRequest,
    responses((status = 200, body = ConversationResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn update_group(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateGroupRequest>,
) -> Result<Json<ConversationResponse>, Error> {
    validate::check_id("id", &id)?;
    let response = state
        .clients
        .update_group(pb::UpdateGroupRequest {
            user_id: claims.user_id,
            conversation_id: id,
            name: body.name,
            avatar: body.avatar,
        })
        .await?;
    conversation(response)
}

/// Adds members to a group (any member may add).
#[utoipa::path(post, path = "/api/v1/groups/{id}/members", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id")),
    request_body = AddMembersRequest,
    responses((status = 200, body = ConversationResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn add_members(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AddMembersRequest>,
) -> Result<Json<ConversationResponse>, Error> {
    validate::check_id("id", &id)?;
    if body.user_ids.is_empty() {
        return Err(Error::invalid("user_ids", "user_ids must not be empty"));
    }
    check_ids("user_ids", &body.user_ids)?;
    let response = state
        .clients
        .add_members(pb::AddMembersRequest {
            user_id: claims.user_id,
            conversation_id: id,
            user_ids: body.user_ids,
        })
        .await?;
    conversation(response)
}

/// Removes a member: the owner removes anyone, a member only itself.
#[utoipa::path(delete, path = "/api/v1/groups/{id}/members/{user_id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id"),
        ("user_id" = String, Path, description = "The member to remove")),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn remove_member(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath((id, user_id)): ApiPath<(String, String)>,
) -> Result<StatusCode, Error> {
    validate::check_id("id", &id)?;
    validate::check_id("user_id", &user_id)?;
    state
        .clients
        .remove_member(pb::RemoveMemberRequest {
            user_id: claims.user_id,
            conversation_id: id,
            member_id: user_id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's conversations, most recent message first.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations", security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, description = "Page size, default 50, max 200"),
        ("cursor" = Option<String>, Query, description = "Cursor from a previous page"),
    ),
    responses((status = 200, body = ConversationsResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<ConversationsResponse>, Error> {
    let request = pb::ListConversationsRequest {
        user_id: claims.user_id,
        page: Some(validate::page(query.limit, query.cursor)?),
    };
    let response = state.clients.list_conversations(request).await?;
    Ok(Json(ConversationsResponse {
        conversations: response
            .conversations
            .into_iter()
            .map(Conversation::from)
            .collect(),
        next_cursor: validate::next_cursor(response.page),
    }))
}

/// One conversation of the caller.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = ConversationResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConversationResponse>, Error> {
    validate::check_id("id", &id)?;
    let request = pb::GetConversationRequest {
        user_id: claims.user_id,
        conversation_id: id,
    };
    let response = state.clients.get_conversation(request).await?;
    conversation(response)
}

/// History, ascending by seq: after `after_seq`, before `before_seq`, or the latest.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id"),
        ("after_seq" = Option<u64>, Query, description = "The first `limit` messages after this seq"),
        ("before_seq" = Option<u64>, Query, description = "The last `limit` messages before this seq"),
        ("limit" = Option<u32>, Query, description = "Default 50, max 200")),
    responses((status = 200, body = MessagesResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn messages(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<MessagesResponse>, Error> {
    validate::check_id("id", &id)?;
    let anchor = match (query.after_seq, query.before_seq) {
        (Some(_), Some(_)) => {
            return Err(Error::bad_request("give after_seq or before_seq, not both"));
        }
        (Some(after), None) => Some(pb::list_messages_request::Anchor::AfterSeq(after)),
        (None, Some(before)) => Some(pb::list_messages_request::Anchor::BeforeSeq(before)),
        (None, None) => None,
    };
    let limit = validate::page(query.limit, None)?.limit;
    let request = pb::ListMessagesRequest {
        user_id: claims.user_id,
        conversation_id: id,
        anchor,
        limit,
    };
    let response = state.clients.list_messages(request).await?;
    Ok(Json(MessagesResponse {
        messages: response.messages.into_iter().map(Message::from).collect(),
    }))
}

/// Every member's delivered and read position.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/receipts", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id")),
    responses((status = 200, body = ReceiptsResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn receipts(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ReceiptsResponse>, Error> {
    validate::check_id("id", &id)?;
    let request = pb::ListReceiptsRequest {
        user_id: claims.user_id,
        conversation_id: id,
    };
    let response = state.clients.list_receipts(request).await?;
    Ok(Json(ReceiptsResponse {
        receipts: response
            .receipts
            .into_iter()
            .map(|r| Receipt {
                user_id: r.user_id,
                delivered_seq: r.delivered_seq,
                read_seq: r.read_seq,
            })
            .collect(),
    }))
}

/// Moves the caller's read position up to `seq` (never down); other members get a
/// `receipt` frame.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/read", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "Conversation id")),
    request_body = ReadRequest,
    responses((status = 204, description = "Recorded"), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse)))]
pub async fn read(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReadRequest>,
) -> Result<StatusCode, Error> {
    validate::check_id("id", &id)?;
    let read = app::conversations::MarkKind::Read;
    app::conversations::mark(&state.clients, &claims.user_id, read, id, body.seq).await?;
    Ok(StatusCode::NO_CONTENT)
}
