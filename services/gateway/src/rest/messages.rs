//! `POST /api/v1/messages`: sending over REST, with the same semantics as the
//! WebSocket `send` (the sender's devices all get a `message` frame, since no device
//! sent it over a socket). The rules are the core's ([`app::messages`]).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use beehive_common::Error;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app;
use crate::auth::AuthUser;
use crate::http::ApiJson;
use crate::state::AppState;
use crate::wire::model::{ErrorResponse, Message, SendRequest};

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
    let send = app::messages::validate_send(body.into())?;
    // No device: every socket of the sender gets the `message` frame.
    let message = app::messages::send(&state.clients, &claims.user_id, "", send).await?;
    let message = Message::from(message);
    Ok((StatusCode::CREATED, Json(MessageResponse { message })).into_response())
}
