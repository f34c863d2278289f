//! `/api/v1/users/*`: the caller's profile and password, other users' public
//! profiles, batch lookup and search.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use beehive_common::Error;
use beehive_proto::v1 as pb;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::app::validate;
use crate::auth::AuthUser;
use crate::http::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::wire::model::{ErrorResponse, User, UserResponse, UsersResponse};

/// Most ids accepted by `GET /users?ids=`.
const MAX_BATCH_IDS: usize = 200;
/// Longest search query.
const MAX_QUERY_LEN: usize = 64;

/// `PATCH /users/me` body; absent fields stay unchanged.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateProfileRequest {
    #[serde(default)]
    pub nickname: Option<String>,
    #[serde(default)]
    pub avatar: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /users/me/password` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    pub old_password: String,
    pub new_password: String,
}

/// `GET /users?ids=` query.
#[derive(Debug, Deserialize)]
pub struct BatchQuery {
    pub ids: Option<String>,
}

/// `GET /users/search` query.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The caller's own user, email included.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserResponse), (status = 401, body = ErrorResponse)))]
pub async fn me(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
) -> Result<Json<UserResponse>, Error> {
    get_user(&state, &claims.user_id, &claims.user_id).await
}

/// Updates the caller's nickname, avatar or description.
#[utoipa::path(patch, path = "/api/v1/users/me", tag = "users", security(("bearer" = [])),
    request_body = UpdateProfileRequest,
    responses((status = 200, body = UserResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse)))]
pub async fn update_me(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiJson(body): ApiJson<UpdateProfileRequest>,
) -> Result<Json<UserResponse>, Error> {
    let response = state
        .clients
        .update_profile(pb::UpdateProfileRequest {
            user_id: claims.user_id.clone(),
            nickname: body.nickname,
            avatar: body.avatar,
            description: body.description,
        })
        .await?;
    Ok(Json(UserResponse {
        user: User::required(response.user, &claims.user_id)?,
    }))
}

/// Changes the caller's password; every other session of the caller is revoked.
#[utoipa::path(post, path = "/api/v1/users/me/password", tag = "users", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses((status = 204, description = "Password changed"), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse)))]
pub async fn change_password(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, Error> {
    state
        .clients
        .change_password(pb::AuthChangePasswordRequest {
            user_id: claims.user_id,
            session_id: claims.session_id,
            old_password: body.old_password,
            new_password: body.new_password,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Another user's public profile (never its email).
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserResponse), (status = 401, body = ErrorResponse),
        (status = 404, body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UserResponse>, Error> {
    validate::check_id("id", &id)?;
    get_user(&state, &id, &claims.user_id).await
}

async fn get_user(state: &AppState, id: &str, viewer: &str) -> Result<Json<UserResponse>, Error> {
    let request = pb::GetUserRequest {
        user_id: id.to_owned(),
        viewer_id: viewer.to_owned(),
    };
    let response = state.clients.get_user(request).await?;
    Ok(Json(UserResponse {
        user: User::required(response.user, viewer)?,
    }))
}

/// Several users at once; unknown ids are skipped.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    params(("ids" = String, Query, description = "Comma-separated user ids (at most 200)")),
    responses((status = 200, body = UsersResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse)))]
pub async fn batch(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiQuery(query): ApiQuery<BatchQuery>,
) -> Result<Json<UsersResponse>, Error> {
    let ids = validate::id_list("ids", query.ids.as_deref().unwrap_or(""), MAX_BATCH_IDS)?;
    let request = pb::BatchGetUsersRequest {
        user_ids: ids,
        viewer_id: claims.user_id.clone(),
    };
    let response = state.clients.batch_get_users(request).await?;
    Ok(Json(UsersResponse {
        users: response
            .users
            .into_iter()
            .map(|u| User::from_pb(u, &claims.user_id))
            .collect(),
        next_cursor: None,
    }))
}

/// Users whose username or nickname starts with `q` (ignoring case).
#[utoipa::path(get, path = "/api/v1/users/search", tag = "users", security(("bearer" = [])),
    params(
        ("q" = String, Query, description = "Prefix of a username or nickname"),
        ("limit" = Option<u32>, Query, description = "Page size, default 50, max 200"),
        ("cursor" = Option<String>, Query, description = "Cursor from a previous page"),
    ),
    responses((status = 200, body = UsersResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse)))]
pub async fn search(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<UsersResponse>, Error> {
    let q = query.q.unwrap_or_default();
    let q = q.trim();
    if q.is_empty() {
        return Err(Error::invalid("q", "q must not be empty"));
    }
    if q.chars().count() > MAX_QUERY_LEN {
        return Err(Error::invalid(
            "q",
            format!("q is longer than {MAX_QUERY_LEN} characters"),
        ));
    }
    let request = pb::SearchUsersRequest {
        query: q.to_owned(),
        page: Some(validate::page(query.limit, query.cursor)?),
        viewer_id: claims.user_id.clone(),
    };
    let response = state.clients.search_users(request).await?;
    Ok(Json(UsersResponse {
        users: response
            .users
            .into_iter()
            .map(|u| User::from_pb(u, &claims.user_id))
            .collect(),
        next_cursor: Some(validate::next_cursor(response.page)),
    }))
}
