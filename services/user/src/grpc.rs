//! The `beehive.v1.UserService` surface: decode and check ids, call [`UserService`], encode.
//! No SQL and no rules here.

use beehive_common::Error;
use beehive_common::id::{parse_id, parse_optional_id};
use beehive_common::time::to_timestamp;
use beehive_proto::v1 as pb;
use beehive_proto::v1::user_service_server::UserService as UserRpc;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::service::{ProfileUpdate, Registration, UserService};
use crate::store::UserRow;

/// Largest request the service decodes: a 2,000-id batch is about 80 KiB.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// The tonic service.
#[derive(Clone)]
pub struct UserGrpc {
    users: UserService,
}

impl UserGrpc {
    /// Serves `users`.
    pub fn new(users: UserService) -> Self {
        Self { users }
    }
}

/// The wire form of a user; the email only for the user itself.
pub fn user_to_proto(row: &UserRow, viewer: Option<Uuid>) -> pb::User {
    pb::User {
        id: row.id.to_string(),
        username: row.username.clone(),
        nickname: row.nickname.clone(),
        avatar: row.avatar.clone(),
        description: row.description.clone(),
        email: if viewer == Some(row.id) {
            row.email.clone()
        } else {
            None
        },
        created_at: Some(to_timestamp(row.created_at)),
    }
}

fn parse_ids(field: &str, ids: &[String]) -> Result<Vec<Uuid>, Error> {
    if ids.len() > crate::account::BATCH_MAX {
        return Err(Error::invalid(
            field,
            format!("at most {} ids per call", crate::account::BATCH_MAX),
        ));
    }
    ids.iter().map(|id| parse_id(field, id)).collect()
}

#[tonic::async_trait]
impl UserRpc for UserGrpc {
    async fn send_verification_code(
        &self,
        request: Request<pb::SendVerificationCodeRequest>,
    ) -> Result<Response<pb::SendVerificationCodeResponse>, Status> {
        let expires_in = self.users.send_code(&request.into_inner().email).await?;
        Ok(Response::new(pb::SendVerificationCodeResponse {
            expires_in,
        }))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterUserRequest>,
    ) -> Result<Response<pb::RegisterUserResponse>, Status> {
        let r = request.into_inner();
        let user = self
            .users
            .register(Registration {
                username: r.username,
                password: r.password,
                email: r.email,
                code: r.code,
                nickname: r.nickname,
            })
            .await?;
        Ok(Response::new(pb::RegisterUserResponse {
            user: Some(user_to_proto(&user, Some(user.id))),
        }))
    }

    async fn verify_credentials(
        &self,
        request: Request<pb::VerifyCredentialsRequest>,
    ) -> Result<Response<pb::VerifyCredentialsResponse>, Status> {
        let r = request.into_inner();
        let user = self.users.verify_credentials(&r.login, &r.password).await?;
        Ok(Response::new(pb::VerifyCredentialsResponse {
            user: Some(user_to_proto(&user, Some(user.id))),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id("user_id", &r.user_id)?;
        let viewer = parse_optional_id("viewer_id", &r.viewer_id)?;
        let user = self.users.get(id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_proto(&user, viewer)),
        }))
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        let r = request.into_inner();
        let ids = parse_ids("user_ids", &r.user_ids)?;
        let viewer = parse_optional_id("viewer_id", &r.viewer_id)?;
        let users = self.users.batch_get(&ids).await?;
        Ok(Response::new(pb::BatchGetUsersResponse {
            users: users.iter().map(|u| user_to_proto(u, viewer)).collect(),
        }))
    }

    async fn search_users(
        &self,
        request: Request<pb::SearchUsersRequest>,
    ) -> Result<Response<pb::SearchUsersResponse>, Status> {
        let r = request.into_inner();
        let viewer = parse_optional_id("viewer_id", &r.viewer_id)?;
        let page = r.page.unwrap_or_default();
        let result = self
            .users
            .search(&r.query, page.limit, &page.cursor)
            .await?;
        Ok(Response::new(pb::SearchUsersResponse {
            users: result
                .users
                .iter()
                .map(|u| user_to_proto(u, viewer))
                .collect(),
            page: Some(pb::PageResponse {
                next_cursor: result.next_cursor,
            }),
        }))
    }

    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id("user_id", &r.user_id)?;
        let user = self
            .users
            .update_profile(
                id,
                ProfileUpdate {
                    nickname: r.nickname,
                    avatar: r.avatar,
                    description: r.description,
                },
            )
            .await?;
        Ok(Response::new(pb::UpdateProfileResponse {
            user: Some(user_to_proto(&user, Some(id))),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let r = request.into_inner();
        let id = parse_id("user_id", &r.user_id)?;
        self.users
            .change_password(id, &r.old_password, &r.new_password)
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {}))
    }

    async fn users_exist(
        &self,
        request: Request<pb::UsersExistRequest>,
    ) -> Result<Response<pb::UsersExistResponse>, Status> {
        let r = request.into_inner();
        if r.user_ids.len() > crate::account::BATCH_MAX {
            return Err(Error::invalid(
                "user_ids",
                format!("at most {} ids per call", crate::account::BATCH_MAX),
            )
            .into());
        }
        // An id that does not parse names no user: it is simply not in the answer.
        let ids: Vec<Uuid> = r
            .user_ids
            .iter()
            .filter_map(|id| Uuid::parse_str(id.trim()).ok())
            .collect();
        let existing = self.users.existing(&ids).await?;
        Ok(Response::new(pb::UsersExistResponse {
            existing_ids: existing.iter().map(Uuid::to_string).collect(),
        }))
    }
}
