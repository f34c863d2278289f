//! `/api/v1/auth/*`: registration, login, token refresh, logout, verification codes
//! and the public signing keys (JWKS).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use beehive_common::Error;
use beehive_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::http::{ApiJson, ClientIp, OptionalApiJson};
use crate::rest::rate_limited::{Limited, LoginLimit, RegisterLimit, SendCodeLimit};
use crate::state::AppState;
use crate::wire::model::{ErrorResponse, User};

/// Longest `User-Agent` recorded on a session.
const MAX_USER_AGENT: usize = 256;

/// `POST /auth/send-code` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendCodeRequest {
    pub email: String,
}

/// `POST /auth/register` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub email: Option<String>,
    /// The emailed verification code; required with `email` when verification is on.
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub nickname: Option<String>,
}

/// `POST /auth/login` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// Username, email or user id.
    pub login: String,
    pub password: String,
}

/// `POST /auth/refresh` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// `POST /auth/logout` body (optional).
#[derive(Debug, Deserialize, ToSchema)]
pub struct LogoutRequest {
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// Register and login answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    pub user: User,
    pub access_token: String,
    pub refresh_token: String,
    /// Access-token lifetime in seconds.
    pub expires_in: u32,
}

/// Refresh answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Access-token lifetime in seconds.
    pub expires_in: u32,
}

/// One public key of the JWK Set.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwk {
    pub kid: String,
    /// Always `OKP`.
    pub kty: &'static str,
    /// Always `Ed25519`.
    pub crv: &'static str,
    /// The raw public key, base64url without padding.
    pub x: String,
    /// Always `EdDSA`.
    pub alg: &'static str,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: &'static str,
}

/// `GET /auth/jwks.json` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

fn client_info(ip: ClientIp, headers: &HeaderMap) -> pb::ClientInfo {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| truncate(ua, MAX_USER_AGENT))
        .unwrap_or_default();
    pb::ClientInfo {
        ip: ip.0.to_string(),
        user_agent,
    }
}

fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn session_response(response: pb::TokenResponse) -> Result<SessionResponse, Error> {
    let user = response
        .user
        .ok_or_else(|| Error::internal("auth answered without a user"))?;
    // The session's owner is the viewer, so its email is shown.
    let viewer = user.id.clone();
    Ok(SessionResponse {
        user: User::from_pb(user, &viewer),
        access_token: response.access_token,
        refresh_token: response.refresh_token,
        expires_in: response.expires_in,
    })
}

/// Sends an email verification code.
#[utoipa::path(post, path = "/api/v1/auth/send-code", tag = "auth", request_body = SendCodeRequest,
    responses(
        (status = 204, description = "Code sent (or logged when no SMTP is configured)"),
        (status = 400, body = ErrorResponse), (status = 429, body = ErrorResponse),
    ))]
pub async fn send_code(
    State(state): State<AppState>,
    _: Limited<SendCodeLimit>,
    ApiJson(body): ApiJson<SendCodeRequest>,
) -> Result<StatusCode, Error> {
    state
        .clients
        .send_verification_code(pb::SendVerificationCodeRequest { email: body.email })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates an account and opens a session.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, body = SessionResponse),
        (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse),
        (status = 429, body = ErrorResponse),
    ))]
pub async fn register(
    State(state): State<AppState>,
    Limited(ip, _): Limited<RegisterLimit>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<Response, Error> {
    let response = state
        .clients
        .register(pb::AuthRegisterRequest {
            username: body.username,
            password: body.password,
            email: body.email,
            code: body.code,
            nickname: body.nickname,
            client: Some(client_info(ip, &headers)),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(session_response(response)?)).into_response())
}

/// Opens a session with a username, email or user id and a password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = SessionResponse),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
        (status = 429, body = ErrorResponse),
    ))]
pub async fn login(
    State(state): State<AppState>,
    Limited(ip, _): Limited<LoginLimit>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<SessionResponse>, Error> {
    let response = state
        .clients
        .login(pb::LoginRequest {
            login: body.login,
            password: body.password,
            client: Some(client_info(ip, &headers)),
        })
        .await?;
    Ok(Json(session_response(response)?))
}

/// Rotates a refresh token. Presenting an already rotated token revokes its session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, body = TokenResponse),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, Error> {
    if body.refresh_token.is_empty() || body.refresh_token.len() > 1024 {
        return Err(Error::unauthenticated());
    }
    let response = state
        .clients
        .refresh(pb::RefreshRequest {
            refresh_token: body.refresh_token,
            client: Some(client_info(ip, &headers)),
        })
        .await?;
    Ok(Json(TokenResponse {
        access_token: response.access_token,
        refresh_token: response.refresh_token,
        expires_in: response.expires_in,
    }))
}

/// Ends the caller's session: its refresh and access tokens and its sockets.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body(content = LogoutRequest, description = "Optional"),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Session revoked"),
        (status = 400, body = ErrorResponse), (status = 401, body = ErrorResponse),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    OptionalApiJson(_body): OptionalApiJson<LogoutRequest>,
) -> Result<StatusCode, Error> {
    // The access token names the session; a refresh token in the body belongs to the
    // same session (or is ignored), so revoking by session covers both.
    state
        .clients
        .logout(pb::LogoutRequest {
            session_id: claims.session_id.clone(),
            user_id: claims.user_id,
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The public keys access tokens are signed with, as a JSON Web Key Set.
#[utoipa::path(get, path = "/api/v1/auth/jwks.json", tag = "auth",
    responses((status = 200, body = JwkSet)))]
pub async fn jwks(State(state): State<AppState>) -> Result<Response, Error> {
    let response = state
        .clients
        .list_signing_keys(pb::ListSigningKeysRequest {})
        .await?;
    let keys = response
        .keys
        .into_iter()
        .filter(|k| k.algorithm == "EdDSA" && k.public_key.len() == 32)
        .map(|k| Jwk {
            kid: k.kid,
            kty: "OKP",
            crv: "Ed25519",
            x: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&k.public_key),
            alg: "EdDSA",
            use_: "sig",
        })
        .collect();
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(JwkSet { keys }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
