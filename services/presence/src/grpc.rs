//! The gRPC surface of the presence service: decode requests, call
//! [`PresenceService`], encode. No Redis and no rules here.

use beehive_common::time::timestamp_from_millis;
use beehive_proto::v1::presence_service_server::PresenceService as PresenceRpc;
use beehive_proto::v1::{
    GetPresenceRequest, GetPresenceResponse, HeartbeatRequest, HeartbeatResponse, InstanceUsers,
    RegisterConnectionRequest, RegisterConnectionResponse, RouteUsersRequest, RouteUsersResponse,
    UnregisterConnectionRequest, UnregisterConnectionResponse, UserPresence,
};
use tonic::{Request, Response, Status};

use crate::presence::{MAX_PRESENCE_IDS, MAX_ROUTE_IDS, parse_user_ids};
use crate::service::PresenceService;

/// The tonic implementation of `beehive.v1.PresenceService`.
#[derive(Clone)]
pub struct PresenceGrpc {
    service: PresenceService,
}

impl PresenceGrpc {
    /// Serves `service`.
    pub fn new(service: PresenceService) -> Self {
        Self { service }
    }
}

#[tonic::async_trait]
impl PresenceRpc for PresenceGrpc {
    async fn register_connection(
        &self,
        request: Request<RegisterConnectionRequest>,
    ) -> Result<Response<RegisterConnectionResponse>, Status> {
        let r = request.into_inner();
        let came_online = self
            .service
            .register_connection(&r.instance_id, r.connection.as_ref())
            .await?;
        Ok(Response::new(RegisterConnectionResponse { came_online }))
    }

    async fn unregister_connection(
        &self,
        request: Request<UnregisterConnectionRequest>,
    ) -> Result<Response<UnregisterConnectionResponse>, Status> {
        let r = request.into_inner();
        let went_offline = self
            .service
            .unregister_connection(&r.instance_id, r.connection.as_ref())
            .await?;
        Ok(Response::new(UnregisterConnectionResponse { went_offline }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.into_inner();
        let ttl = self
            .service
            .heartbeat(&r.instance_id, &r.connections)
            .await?;
        Ok(Response::new(HeartbeatResponse {
            ttl_seconds: ttl.as_secs_f64().ceil() as u32,
        }))
    }

    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceResponse>, Status> {
        let r = request.into_inner();
        let users = parse_user_ids("user_ids", &r.user_ids, MAX_PRESENCE_IDS)?;
        let presence = self
            .service
            .get_presence(&users)
            .await?
            .into_iter()
            .map(|p| UserPresence {
                user_id: p.user.to_string(),
                online: p.online,
                devices: p.devices,
                last_seen: p.last_seen_ms.map(timestamp_from_millis),
            })
            .collect();
        Ok(Response::new(GetPresenceResponse { presence }))
    }

    async fn route_users(
        &self,
        request: Request<RouteUsersRequest>,
    ) -> Result<Response<RouteUsersResponse>, Status> {
        let r = request.into_inner();
        let users = parse_user_ids("user_ids", &r.user_ids, MAX_ROUTE_IDS)?;
        let routes = self
            .service
            .route_users(users)
            .await?
            .into_iter()
            .map(|(instance_id, users)| InstanceUsers {
                instance_id,
                user_ids: users.iter().map(ToString::to_string).collect(),
            })
            .collect();
        Ok(Response::new(RouteUsersResponse { routes }))
    }
}
