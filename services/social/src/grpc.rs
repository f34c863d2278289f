//! The gRPC surface of the social service: decode and validate ids, call
//! [`SocialService`], encode. No SQL and no rules here.

use std::sync::Arc;

use beehive_common::id::parse_id;
use beehive_proto::v1::social_service_server::SocialService as SocialRpc;
use beehive_proto::v1::{
    AcceptFriendRequestRequest, AcceptFriendRequestResponse, AreFriendsRequest, AreFriendsResponse,
    DeleteFriendRequest, DeleteFriendResponse, FilterFriendsRequest, FilterFriendsResponse,
    ListFriendRequestsRequest, ListFriendRequestsResponse, ListFriendsRequest, ListFriendsResponse,
    PageResponse, RejectFriendRequestRequest, RejectFriendRequestResponse,
    SendFriendRequestRequest, SendFriendRequestResponse,
};
use tonic::{Request, Response, Status};

use crate::friends::{parse_candidates, parse_direction};
use crate::service::SocialService;

/// The tonic implementation of `beehive.v1.SocialService`.
#[derive(Clone)]
pub struct SocialGrpc {
    social: Arc<SocialService>,
}

impl SocialGrpc {
    /// Serves `social`.
    pub fn new(social: Arc<SocialService>) -> Self {
        Self { social }
    }
}

fn page_of(request: Option<&beehive_proto::v1::PageRequest>) -> (u32, &str) {
    request.map_or((0, ""), |p| (p.limit, p.cursor.as_str()))
}

#[tonic::async_trait]
impl SocialRpc for SocialGrpc {
    async fn send_friend_request(
        &self,
        request: Request<SendFriendRequestRequest>,
    ) -> Result<Response<SendFriendRequestResponse>, Status> {
        let r = request.into_inner();
        let from = parse_id("from_user_id", &r.from_user_id)?;
        let to = parse_id("to_user_id", &r.to_user_id)?;
        let sent = self.social.send_request(from, to, &r.message).await?;
        Ok(Response::new(SendFriendRequestResponse {
            request: Some(sent.into_request()),
        }))
    }

    async fn list_friend_requests(
        &self,
        request: Request<ListFriendRequestsRequest>,
    ) -> Result<Response<ListFriendRequestsResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let direction = parse_direction(r.direction)?;
        let (limit, cursor) = page_of(r.page.as_ref());
        let page = self
            .social
            .list_requests(user, direction, limit, cursor)
            .await?;
        Ok(Response::new(ListFriendRequestsResponse {
            requests: page.items,
            page: Some(PageResponse {
                next_cursor: page.next_cursor,
            }),
        }))
    }

    async fn accept_friend_request(
        &self,
        request: Request<AcceptFriendRequestRequest>,
    ) -> Result<Response<AcceptFriendRequestResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let id = parse_id("request_id", &r.request_id)?;
        let accepted = self.social.accept(user, id).await?;
        Ok(Response::new(AcceptFriendRequestResponse {
            request: Some(accepted),
        }))
    }

    async fn reject_friend_request(
        &self,
        request: Request<RejectFriendRequestRequest>,
    ) -> Result<Response<RejectFriendRequestResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let id = parse_id("request_id", &r.request_id)?;
        self.social.reject(user, id).await?;
        Ok(Response::new(RejectFriendRequestResponse {}))
    }

    async fn list_friends(
        &self,
        request: Request<ListFriendsRequest>,
    ) -> Result<Response<ListFriendsResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let (limit, cursor) = page_of(r.page.as_ref());
        let page = self.social.list_friends(user, limit, cursor).await?;
        Ok(Response::new(ListFriendsResponse {
            friend_ids: page.items.iter().map(ToString::to_string).collect(),
            page: Some(PageResponse {
                next_cursor: page.next_cursor,
            }),
        }))
    }

    async fn delete_friend(
        &self,
        request: Request<DeleteFriendRequest>,
    ) -> Result<Response<DeleteFriendResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let friend = parse_id("friend_id", &r.friend_id)?;
        self.social.delete_friend(user, friend).await?;
        Ok(Response::new(DeleteFriendResponse {}))
    }

    async fn are_friends(
        &self,
        request: Request<AreFriendsRequest>,
    ) -> Result<Response<AreFriendsResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let other = parse_id("other_user_id", &r.other_user_id)?;
        let friends = self.social.are_friends(user, other).await?;
        Ok(Response::new(AreFriendsResponse { friends }))
    }

    async fn filter_friends(
        &self,
        request: Request<FilterFriendsRequest>,
    ) -> Result<Response<FilterFriendsResponse>, Status> {
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let candidates = parse_candidates(&r.candidate_ids)?;
        let friends = self.social.filter_friends(user, &candidates).await?;
        Ok(Response::new(FilterFriendsResponse {
            friend_ids: friends.iter().map(ToString::to_string).collect(),
        }))
    }
}
