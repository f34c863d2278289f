//! `GET /ws`: authenticates, registers the socket, then answers 101.
//!
//! The order matters. The socket is registered with the hub (locally and with
//! presence) before the 101 goes out, so any event committed after the client saw the
//! 101 is routed to this instance and finds the socket's outbox (frames wait there
//! until the upgrade completes). A failed registration fails the upgrade instead of
//! leaving a socket that silently misses live traffic. The [`Registration`] guard
//! travels into the socket task; if the upgrade fails, axum drops that task's callback
//! and with it the guard, which undoes the registration.

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use beehive_common::Error;
use uuid::Uuid;

use super::socket;
use crate::app::limits::MAX_DEVICE_ID_BYTES;
use crate::auth::MAX_TOKEN_BYTES;
use crate::state::AppState;

/// The subprotocol the server selects when a client offers it.
pub const SUBPROTOCOL: &str = "beehive.v1";
/// Prefix of the subprotocol entry carrying the access token (browsers cannot set
/// headers on WebSocket requests).
const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// Query parameters of `GET /ws`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WsQuery {
    token: Option<String>,
    device_id: Option<String>,
}

/// The upgrade handler.
pub(crate) async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<WsQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match accept(state, headers, query, ws).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn accept(
    state: AppState,
    headers: HeaderMap,
    query: Result<Query<WsQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, Error> {
    let query = query
        .map_err(|_| Error::bad_request("invalid query string"))?
        .0;
    let token = bearer_header(&headers)
        .or_else(|| ws.as_ref().ok().and_then(subprotocol_token))
        .or(query.token.as_deref())
        .ok_or_else(Error::unauthenticated)?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Error::unauthenticated());
    }
    let claims = state.verifier.verify_fresh(token).await?;
    let ws = ws.map_err(|_| Error::bad_request("GET /ws must be a WebSocket upgrade request"))?;
    let user_id = Uuid::parse_str(&claims.user_id).map_err(|_| Error::unauthenticated())?;
    let device_id = match query.device_id {
        Some(device) => valid_device_id(device)?,
        None => None,
    };
    let registration = state
        .hub
        .register(user_id, claims.session_id, device_id)
        .await?;
    let conn = registration.conn();
    metrics::counter!("beehive_ws_upgrades_total").increment(1);
    tracing::debug!(connection_id = %conn.id, user_id = %conn.user_id, device_id = %conn.device_id, "socket registered");
    let config = &state.hub.config;
    let connection_id = conn.id;
    let failed = move |error: axum::Error| {
        // The callback holding the registration is dropped with the failed upgrade,
        // which undoes the registration.
        tracing::debug!(%error, %connection_id, "websocket upgrade failed");
    };
    Ok(ws
        .protocols([SUBPROTOCOL])
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_write_buffer_size(config.max_message_size.saturating_mul(4))
        .max_message_size(config.max_message_size)
        .max_frame_size(config.max_message_size)
        .on_failed_upgrade(failed)
        .on_upgrade(move |socket: axum::extract::ws::WebSocket| socket::run(registration, socket)))
}

/// The token of `Authorization: Bearer <token>`.
fn bearer_header(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The token of a `bearer.<token>` subprotocol entry.
fn subprotocol_token<F>(ws: &WebSocketUpgrade<F>) -> Option<&str> {
    ws.requested_protocols()
        .filter_map(|p| p.to_str().ok())
        .find_map(|p| p.strip_prefix(BEARER_PROTOCOL_PREFIX))
        .filter(|t| !t.is_empty())
}

/// `device_id`: 1-128 printable characters; empty means none.
fn valid_device_id(device: String) -> Result<Option<String>, Error> {
    if device.is_empty() {
        return Ok(None);
    }
    if device.len() > MAX_DEVICE_ID_BYTES || device.chars().any(char::is_control) {
        return Err(Error::invalid(
            "device_id",
            format!("device_id must be 1-{MAX_DEVICE_ID_BYTES} bytes without control characters"),
        ));
    }
    Ok(Some(device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_needs_the_scheme() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("value"));
        assert_eq!(bearer_header(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("value"));
        assert_eq!(bearer_header(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer  ".parse().expect("value"));
        assert_eq!(bearer_header(&headers), None);
    }

    #[test]
    fn device_ids_are_bounded() {
        assert_eq!(valid_device_id(String::new()).expect("ok"), None);
        assert_eq!(
            valid_device_id("phone-1".into()).expect("ok"),
            Some("phone-1".to_owned())
        );
        assert!(valid_device_id("x".repeat(MAX_DEVICE_ID_BYTES + 1)).is_err());
        assert!(valid_device_id("a\nb".into()).is_err());
    }
}
