//! The `beehive.v1.AuthService` surface: decode and check ids, call [`AuthService`], encode.
//! No SQL and no rules here.

use beehive_common::Error;
use beehive_common::id::parse_id;
use beehive_common::time::to_timestamp;
use beehive_proto::v1 as pb;
use beehive_proto::v1::auth_service_server::AuthService as AuthRpc;
use beehive_proto::v1::revoke_sessions_request::Target;
use tonic::{Request, Response, Status};

use crate::keys::ALGORITHM;
use crate::service::{AuthService, Issued};
use crate::session::{ClientInfo, Reason};

/// Largest request the service decodes; every auth request is small.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The tonic service.
#[derive(Clone)]
pub struct AuthGrpc {
    auth: AuthService,
}

impl AuthGrpc {
    /// Serves `auth`.
    pub fn new(auth: AuthService) -> Self {
        Self { auth }
    }
}

fn client_info(client: Option<pb::ClientInfo>) -> ClientInfo {
    client
        .map(|c| ClientInfo::new(&c.ip, &c.user_agent))
        .unwrap_or_default()
}

fn token_response(issued: Issued) -> pb::TokenResponse {
    pb::TokenResponse {
        user: issued.user,
        access_token: issued.access_token,
        refresh_token: issued.refresh_token,
        expires_in: issued.expires_in,
        session_id: issued.session_id.to_string(),
    }
}

#[tonic::async_trait]
impl AuthRpc for AuthGrpc {
    async fn register(
        &self,
        request: Request<pb::AuthRegisterRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let r = request.into_inner();
        let client = client_info(r.client);
        let issued = self
            .auth
            .register(
                pb::RegisterUserRequest {
                    username: r.username,
                    password: r.password,
                    email: r.email,
                    code: r.code,
                    nickname: r.nickname,
                },
                client,
            )
            .await?;
        Ok(Response::new(token_response(issued)))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let r = request.into_inner();
        let issued = self
            .auth
            .login(&r.login, &r.password, client_info(r.client))
            .await?;
        Ok(Response::new(token_response(issued)))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let r = request.into_inner();
        let issued = self
            .auth
            .refresh(&r.refresh_token, client_info(r.client))
            .await?;
        Ok(Response::new(token_response(issued)))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let r = request.into_inner();
        let session_id = parse_id("session_id", &r.session_id)?;
        let user_id = parse_id("user_id", &r.user_id)?;
        self.auth.logout(session_id, user_id).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<pb::AuthChangePasswordRequest>,
    ) -> Result<Response<pb::AuthChangePasswordResponse>, Status> {
        let r = request.into_inner();
        let user_id = parse_id("user_id", &r.user_id)?;
        let keep = if r.session_id.trim().is_empty() {
            None
        } else {
            Some(parse_id("session_id", &r.session_id)?)
        };
        let revoked_sessions = self
            .auth
            .change_password(user_id, keep, r.old_password, r.new_password)
            .await?;
        Ok(Response::new(pb::AuthChangePasswordResponse {
            revoked_sessions,
        }))
    }

    async fn revoke_sessions(
        &self,
        request: Request<pb::RevokeSessionsRequest>,
    ) -> Result<Response<pb::RevokeSessionsResponse>, Status> {
        let r = request.into_inner();
        let reason = Reason::from_proto(r.reason)?;
        let revoked_sessions = match r.target {
            Some(Target::SessionId(id)) => {
                let session_id = parse_id("session_id", &id)?;
                self.auth.revoke_session(session_id, reason).await?
            }
            Some(Target::UserId(id)) => {
                let user_id = parse_id("user_id", &id)?;
                let keep = if r.except_session_id.trim().is_empty() {
                    None
                } else {
                    Some(parse_id("except_session_id", &r.except_session_id)?)
                };
                self.auth.revoke_user(user_id, keep, reason).await?
            }
            None => {
                return Err(Error::invalid("target", "session_id or user_id is required").into());
            }
        };
        Ok(Response::new(pb::RevokeSessionsResponse {
            revoked_sessions,
        }))
    }

    async fn list_signing_keys(
        &self,
        _request: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        let ring = self.auth.tokens().keys();
        Ok(Response::new(pb::ListSigningKeysResponse {
            keys: ring
                .keys()
                .iter()
                .map(|k| pb::SigningKey {
                    kid: k.kid.clone(),
                    algorithm: ALGORITHM.to_owned(),
                    public_key: k.public_key.to_vec(),
                    created_at: Some(to_timestamp(k.created_at)),
                })
                .collect(),
            active_kid: ring.active().kid.clone(),
        }))
    }

    async fn list_revoked_sessions(
        &self,
        _request: Request<pb::ListRevokedSessionsRequest>,
    ) -> Result<Response<pb::ListRevokedSessionsResponse>, Status> {
        let rows = self.auth.recently_revoked().await?;
        Ok(Response::new(pb::ListRevokedSessionsResponse {
            sessions: rows
                .into_iter()
                .map(|row| pb::RevokedSession {
                    session_id: row.id.to_string(),
                    user_id: row.user_id.to_string(),
                    reason: Reason::parse(&row.revoked_reason)
                        .map_or(pb::RevocationReason::SessionRevoked, Reason::to_proto)
                        as i32,
                    revoked_at: Some(to_timestamp(row.revoked_at)),
                })
                .collect(),
        }))
    }

    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        let verified = self
            .auth
            .validate(&request.into_inner().access_token)
            .await?;
        Ok(Response::new(pb::ValidateTokenResponse {
            user_id: verified.user_id.to_string(),
            session_id: verified.session_id.to_string(),
            expires_at: Some(prost_types::Timestamp {
                seconds: i64::try_from(verified.expires_at).unwrap_or(i64::MAX),
                nanos: 0,
            }),
        }))
    }
}
