//! `GET /api/v1/presence`: who is online, as the core's visibility rule
//! ([`app::presence`]) lets the caller see it.

use axum::Json;
use axum::extract::State;
use beehive_common::Error;
use serde::Deserialize;

use crate::app;
use crate::app::limits::MAX_PRESENCE_USERS;
use crate::auth::AuthUser;
use crate::http::ApiQuery;
use crate::state::AppState;
use crate::wire::model::{ErrorResponse, Presence, PresenceResponse};

/// `GET /presence` query.
#[derive(Debug, Deserialize)]
pub struct PresenceQuery {
    pub user_ids: Option<String>,
}

/// Presence of up to 200 users.
#[utoipa::path(get, path = "/api/v1/presence", tag = "presence", security(("bearer" = [])),
    params(("user_ids" = String, Query, description = "Comma-separated user ids (at most 200)")),
    responses((status = 200, body = PresenceResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse)))]
pub async fn get(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiQuery(query): ApiQuery<PresenceQuery>,
) -> Result<Json<PresenceResponse>, Error> {
    let ids = app::validate::id_list(
        "user_ids",
        query.user_ids.as_deref().unwrap_or(""),
        MAX_PRESENCE_USERS,
    )?;
    let presence = app::presence::get(&state.clients, &claims.user_id, ids).await?;
    Ok(Json(PresenceResponse {
        presence: presence.into_iter().map(Presence::from).collect(),
    }))
}
