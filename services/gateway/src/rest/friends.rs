//! `/api/v1/friends/*`: friend requests and friendships (the social service), with
//! users rendered through the user service.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use beehive_common::Error;
use beehive_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::validate;
use crate::auth::AuthUser;
use crate::http::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::wire::model::{ErrorResponse, FriendRequest, User};

/// `POST /friends/requests` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendRequest {
    pub to_user_id: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// `{request}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestResponse {
    pub request: FriendRequest,
}

/// `{requests: [...], next_cursor}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RequestsResponse {
    pub requests: Vec<FriendRequest>,
    pub next_cursor: Option<String>,
}

/// `{friend}`: the other user of an accepted request.
#[derive(Debug, Serialize, ToSchema)]
pub struct FriendResponse {
    pub friend: User,
}

/// `{friends: [...], next_cursor}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct FriendsResponse {
    pub friends: Vec<User>,
    pub next_cursor: Option<String>,
}

/// `GET /friends/requests` query.
#[derive(Debug, Deserialize)]
pub struct RequestsQuery {
    pub direction: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Paging query.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Asks another user for friendship; they get a `friend_request` frame.
#[utoipa::path(post, path = "/api/v1/friends/requests", tag = "friends", security(("bearer" = [])),
    request_body = SendRequest,
    responses((status = 201, body = RequestResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, body = ErrorResponse, description = "Already friends, or a pending request younger than 24 h")))]
pub async fn send(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiJson(body): ApiJson<SendRequest>,
) -> Result<Response, Error> {
    validate::check_id("to_user_id", &body.to_user_id)?;
    if body.to_user_id == claims.user_id {
        return Err(Error::invalid("to_user_id", "you cannot befriend yourself"));
    }
    let response = state
        .clients
        .send_friend_request(pb::SendFriendRequestRequest {
            from_user_id: claims.user_id,
            to_user_id: body.to_user_id,
            message: body.message.unwrap_or_default(),
        })
        .await?;
    let request = response
        .request
        .map(FriendRequest::from)
        .ok_or_else(|| Error::internal("social answered without a request"))?;
    Ok((StatusCode::CREATED, Json(RequestResponse { request })).into_response())
}

/// Pending requests to (`incoming`, the default) or from (`outgoing`) the caller.
#[utoipa::path(get, path = "/api/v1/friends/requests", tag = "friends", security(("bearer" = [])),
    params(
        ("direction" = Option<String>, Query, description = "`incoming` (default) or `outgoing`"),
        ("limit" = Option<u32>, Query, description = "Page size, default 50, max 200"),
        ("cursor" = Option<String>, Query, description = "Cursor from a previous page"),
    ),
    responses((status = 200, body = RequestsResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse)))]
pub async fn list_requests(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiQuery(query): ApiQuery<RequestsQuery>,
) -> Result<Json<RequestsResponse>, Error> {
    let direction = match query.direction.as_deref() {
        None | Some("incoming") => pb::RequestDirection::Incoming,
        Some("outgoing") => pb::RequestDirection::Outgoing,
        Some(_) => {
            return Err(Error::invalid(
                "direction",
                "direction must be incoming or outgoing",
            ));
        }
    };
    let request = pb::ListFriendRequestsRequest {
        user_id: claims.user_id,
        direction: direction as i32,
        page: Some(validate::page(query.limit, query.cursor)?),
    };
    let response = state.clients.list_friend_requests(request).await?;
    Ok(Json(RequestsResponse {
        requests: response
            .requests
            .into_iter()
            .map(FriendRequest::from)
            .collect(),
        next_cursor: validate::next_cursor(response.page),
    }))
}

/// Accepts a request addressed to the caller; the friendship is mutual and the
/// requester gets a `friend_accepted` frame.
#[utoipa::path(post, path = "/api/v1/friends/requests/{id}/accept", tag = "friends", security(("bearer" = [])),
    params(("id" = String, Path, description = "Friend request id")),
    responses((status = 200, body = FriendResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn accept(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FriendResponse>, Error> {
    validate::check_id("id", &id)?;
    let request = state
        .clients
        .accept_friend_request(pb::AcceptFriendRequestRequest {
            user_id: claims.user_id.clone(),
            request_id: id,
        })
        .await?
        .request
        .ok_or_else(|| Error::internal("social answered without a request"))?;
    let other = if request.from_user_id == claims.user_id {
        request.to_user_id
    } else {
        request.from_user_id
    };
    let user = state
        .clients
        .get_user(pb::GetUserRequest {
            user_id: other,
            viewer_id: claims.user_id.clone(),
        })
        .await?
        .user;
    Ok(Json(FriendResponse {
        friend: User::required(user, &claims.user_id)?,
    }))
}

/// Rejects a request addressed to the caller.
#[utoipa::path(post, path = "/api/v1/friends/requests/{id}/reject", tag = "friends", security(("bearer" = [])),
    params(("id" = String, Path, description = "Friend request id")),
    responses((status = 204, description = "Rejected"), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn reject(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Error> {
    validate::check_id("id", &id)?;
    state
        .clients
        .reject_friend_request(pb::RejectFriendRequestRequest {
            user_id: claims.user_id,
            request_id: id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's friends as users.
#[utoipa::path(get, path = "/api/v1/friends", tag = "friends", security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, description = "Page size, default 50, max 200"),
        ("cursor" = Option<String>, Query, description = "Cursor from a previous page"),
    ),
    responses((status = 200, body = FriendsResponse), (status = 401, body = ErrorResponse)))]
pub async fn list(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<FriendsResponse>, Error> {
    let request = pb::ListFriendsRequest {
        user_id: claims.user_id.clone(),
        page: Some(validate::page(query.limit, query.cursor)?),
    };
    let response = state.clients.list_friends(request).await?;
    let next_cursor = validate::next_cursor(response.page);
    if response.friend_ids.is_empty() {
        return Ok(Json(FriendsResponse {
            friends: Vec::new(),
            next_cursor,
        }));
    }
    // One batch call for the whole page, not one per friend.
    let request = pb::BatchGetUsersRequest {
        user_ids: response.friend_ids,
        viewer_id: claims.user_id.clone(),
    };
    let users = state.clients.batch_get_users(request).await?.users;
    Ok(Json(FriendsResponse {
        friends: users
            .into_iter()
            .map(|u| User::from_pb(u, &claims.user_id))
            .collect(),
        next_cursor,
    }))
}

/// Ends a friendship in both directions.
#[utoipa::path(delete, path = "/api/v1/friends/{user_id}", tag = "friends", security(("bearer" = [])),
    params(("user_id" = String, Path, description = "The friend's user id")),
    responses((status = 204, description = "No longer friends"), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn delete(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(user_id): ApiPath<String>,
) -> Result<StatusCode, Error> {
    validate::check_id("user_id", &user_id)?;
    state
        .clients
        .delete_friend(pb::DeleteFriendRequest {
            user_id: claims.user_id,
            friend_id: user_id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
