//! `POST /api/v1/messages`: sending over REST, with the same semantics as the
//! WebSocket `send` (the sender's devices all get a `message` frame, since no device
//! sent it over a socket).

use crate::rpc::rpc;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use beehive_common::Error;
use beehive_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::http::ApiJson;
use crate::rest::model::{self, ErrorResponse, Message};
use crate::state::AppState;

/// Longest accepted `client_msg_id`.
const MAX_CLIENT_MSG_ID: usize = 128;

/// `POST /messages` body: exactly one of `conversation_id` and `to_user_id`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendRequest {
    /// The client's idempotency key: sending twice with the same one returns the first
    /// message and stores nothing new.
    pub client_msg_id: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// A direct message to a friend: creates or reuses the direct conversation.
    #[serde(default)]
    pub to_user_id: Option<String>,
    /// `text`, `image`, `voice` or `file`; other than `text` requires `file_id`.
    pub msg_type: String,
    pub content: String,
    #[serde(default)]
    pub file_id: Option<String>,
}

/// `{message}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    pub message: Message,
}

/// Sends a message to a conversation the caller is a member of, or directly to a
/// friend.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", security(("bearer" = [])),
    request_body = SendRequest,
    responses((status = 201, body = MessageResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse),
        (status = 403, body = ErrorResponse, description = "Not friends (direct) or not a member (group)"),
        (status = 404, body = ErrorResponse), (status = 413, body = ErrorResponse)))]
pub async fn send(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiJson(body): ApiJson<SendRequest>,
) -> Result<Response, Error> {
    if body.client_msg_id.is_empty() || body.client_msg_id.len() > MAX_CLIENT_MSG_ID {
        return Err(Error::invalid(
            "client_msg_id",
            format!("client_msg_id must be 1 to {MAX_CLIENT_MSG_ID} bytes"),
        ));
    }
    let msg_type = model::parse_msg_type(&body.msg_type)
        .ok_or_else(|| Error::invalid("msg_type", "msg_type must be text, image, voice or file"))?;
    if msg_type != pb::MessageType::Text && body.file_id.as_deref().unwrap_or("").is_empty() {
        return Err(Error::invalid(
            "file_id",
            format!("a {} message needs a file_id", body.msg_type),
        ));
    }
    let target = match (body.conversation_id, body.to_user_id) {
        (Some(conversation_id), None) => {
            model::check_id("conversation_id", &conversation_id)?;
            pb::send_message_request::Target::ConversationId(conversation_id)
        }
        (None, Some(to)) => {
            model::check_id("to_user_id", &to)?;
            // DESIGN.md: the gateway checks friendship; the message service trusts it.
            let request = pb::AreFriendsRequest {
                user_id: claims.user_id.clone(),
                other_user_id: to.clone(),
            };
            let friends = state
                .retry
                .idempotent(|| rpc!(state.clients.social, are_friends, request.clone()))
                .await?
                .friends;
            if !friends {
                return Err(Error::PermissionDenied(
                    "direct messages require friendship".to_owned(),
                ));
            }
            pb::send_message_request::Target::ToUserId(to)
        }
        _ => {
            return Err(Error::bad_request(
                "give exactly one of conversation_id and to_user_id",
            ));
        }
    };
    let request = pb::SendMessageRequest {
        sender_id: claims.user_id,
        client_msg_id: body.client_msg_id,
        target: Some(target),
        msg_type: msg_type as i32,
        content: body.content,
        file_id: body.file_id,
        device_id: String::new(),
    };
    // Retrying is safe: the service dedupes on (sender, client_msg_id).
    let response = state
        .retry
        .idempotent(|| rpc!(state.clients.message, send_message, request.clone()))
        .await?;
    let message = response
        .message
        .map(Message::from)
        .ok_or_else(|| Error::internal("SendMessage returned no message"))?;
    Ok((StatusCode::CREATED, Json(MessageResponse { message })).into_response())
}
