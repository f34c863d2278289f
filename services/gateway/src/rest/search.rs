//! `GET /api/v1/search/messages`: message search through the core
//! ([`app::search`]).

use axum::Json;
use axum::extract::State;
use beehive_common::Error;
use serde::Deserialize;

use crate::app;
use crate::app::search::SearchInput;
use crate::auth::AuthUser;
use crate::http::ApiQuery;
use crate::state::AppState;
use crate::wire::model::ErrorResponse;
use crate::wire::search::SearchResponse;

/// `GET /search/messages` query.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub conversation_id: Option<String>,
    pub sender_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub order: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Messages of the caller's conversations (after it joined each) matching every word.
#[utoipa::path(get, path = "/api/v1/search/messages", tag = "search", security(("bearer" = [])),
    params(("q" = String, Query, description = "Plain words, all of which must match (1-256 characters; query-syntax characters are taken literally)"),
        ("conversation_id" = Option<String>, Query, description = "Only this conversation"),
        ("sender_id" = Option<String>, Query, description = "Only messages of this sender"),
        ("from" = Option<String>, Query, description = "Created at or after (RFC 3339)"),
        ("to" = Option<String>, Query, description = "Created at or before (RFC 3339)"),
        ("order" = Option<String>, Query, description = "recent (default, newest first) or relevance"),
        ("limit" = Option<u32>, Query, description = "Default 20, max 100"),
        ("cursor" = Option<String>, Query, description = "Cursor from a previous page")),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorResponse),
        (status = 401, body = ErrorResponse), (status = 503, body = ErrorResponse)))]
pub async fn messages(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<SearchResponse>, Error> {
    let input = SearchInput {
        q: query.q,
        conversation_id: query.conversation_id,
        sender_id: query.sender_id,
        from: query.from,
        to: query.to,
        order: query.order,
        limit: query.limit,
        cursor: query.cursor,
    };
    let response = app::search::messages(&state.clients, &claims.user_id, input).await?;
    Ok(Json(SearchResponse::from(response)))
}
