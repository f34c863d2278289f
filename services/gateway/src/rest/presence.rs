//! `GET /api/v1/presence`: who is online, visible only to friends and to members of a
//! shared conversation; anyone else is reported offline with no devices, so presence
//! cannot be used to probe strangers.

use crate::rpc::rpc;
use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use beehive_common::Error;
use beehive_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::http::ApiQuery;
use crate::rest::model::{self, ErrorResponse};
use crate::state::AppState;

/// Most users asked about at once.
const MAX_USERS: usize = 200;

/// `GET /presence` query.
#[derive(Debug, Deserialize)]
pub struct PresenceQuery {
    pub user_ids: Option<String>,
}

/// One user's presence.
#[derive(Debug, Serialize, ToSchema)]
pub struct Presence {
    pub user_id: String,
    pub online: bool,
    /// Connected devices.
    pub devices: u32,
    /// RFC 3339, UTC; null when unknown or not visible.
    pub last_seen: Option<String>,
}

/// `{presence: [...]}`, in the order asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceResponse {
    pub presence: Vec<Presence>,
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
    let ids = model::id_list(
        "user_ids",
        query.user_ids.as_deref().unwrap_or(""),
        MAX_USERS,
    )?;
    let others: Vec<String> = ids
        .iter()
        .filter(|id| **id != claims.user_id)
        .cloned()
        .collect();
    let mut visible: HashSet<String> = HashSet::with_capacity(ids.len());
    visible.insert(claims.user_id.clone());
    if !others.is_empty() {
        // Both visibility checks at once: one round trip's latency, not two.
        let friends = pb::FilterFriendsRequest {
            user_id: claims.user_id.clone(),
            candidate_ids: others.clone(),
        };
        let peers = pb::FilterConversationPeersRequest {
            user_id: claims.user_id.clone(),
            candidate_ids: others,
        };
        let (friends, peers) = futures::future::try_join(
            state.retry.idempotent(|| {
                let mut social = state.clients.social.clone();
                let request = friends.clone();
                async move { social.filter_friends(request).await }
            }),
            state.retry.idempotent(|| {
                let mut message = state.clients.message.clone();
                let request = peers.clone();
                async move { message.filter_conversation_peers(request).await }
            }),
        )
        .await?;
        visible.extend(friends.into_inner().friend_ids);
        visible.extend(peers.into_inner().peer_ids);
    }
    let asked: Vec<String> = ids
        .iter()
        .filter(|id| visible.contains(*id))
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut known = std::collections::HashMap::new();
    if !asked.is_empty() {
        let request = pb::GetPresenceRequest { user_ids: asked };
        let response = state
            .retry
            .idempotent(|| rpc!(state.clients.presence, get_presence, request.clone()))
            .await?;
        for p in response.presence {
            known.insert(p.user_id.clone(), p);
        }
    }
    let presence = ids
        .into_iter()
        .map(|user_id| match known.get(&user_id) {
            Some(p) => Presence {
                online: p.online,
                devices: p.devices,
                last_seen: model::timestamp(p.last_seen.as_ref()),
                user_id,
            },
            None => Presence {
                user_id,
                online: false,
                devices: 0,
                last_seen: None,
            },
        })
        .collect();
    Ok(Json(PresenceResponse { presence }))
}
