//! The gRPC surface of the presence service: validate, call the store, encode, and
//! queue announcements of transitions.

use beehive_common::Error;
use beehive_proto::v1::presence_service_server::PresenceService;
use beehive_proto::v1::{
    GetPresenceRequest, GetPresenceResponse, HeartbeatRequest, HeartbeatResponse, InstanceUsers,
    RegisterConnectionRequest, RegisterConnectionResponse, RouteUsersRequest, RouteUsersResponse,
    UnregisterConnectionRequest, UnregisterConnectionResponse, UserPresence,
};
use tonic::{Request, Response, Status};

use crate::announce::Announcer;
use crate::presence::{
    MAX_HEARTBEAT_CONNECTIONS, MAX_PRESENCE_IDS, MAX_ROUTE_IDS, parse_connection, parse_user_ids,
    routes, validate_instance,
};
use crate::store::Store;

/// The tonic implementation of `beehive.v1.PresenceService`.
#[derive(Clone)]
pub struct PresenceGrpc {
    store: Store,
    announcer: Announcer,
}

impl PresenceGrpc {
    /// Serves `store`, announcing transitions through `announcer`.
    pub fn new(store: Store, announcer: Announcer) -> Self {
        Self { store, announcer }
    }
}

fn timestamp_ms(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

#[tonic::async_trait]
impl PresenceService for PresenceGrpc {
    async fn register_connection(
        &self,
        request: Request<RegisterConnectionRequest>,
    ) -> Result<Response<RegisterConnectionResponse>, Status> {
        let r = request.into_inner();
        validate_instance(&r.instance_id)?;
        let conn = parse_connection(r.connection.as_ref())?;
        let came_online = self.store.register(&r.instance_id, &conn).await?;
        metrics::counter!("beehive_presence_registrations_total").increment(1);
        if came_online {
            tracing::debug!(user = %conn.user, instance = %r.instance_id, "user came online");
            self.announcer.announce(conn.user, true);
        }
        Ok(Response::new(RegisterConnectionResponse { came_online }))
    }

    async fn unregister_connection(
        &self,
        request: Request<UnregisterConnectionRequest>,
    ) -> Result<Response<UnregisterConnectionResponse>, Status> {
        let r = request.into_inner();
        validate_instance(&r.instance_id)?;
        let conn = parse_connection(r.connection.as_ref())?;
        let went_offline = self.store.unregister(&r.instance_id, &conn).await?;
        if went_offline {
            tracing::debug!(user = %conn.user, instance = %r.instance_id, "user went offline");
            self.announcer.announce(conn.user, false);
        }
        Ok(Response::new(UnregisterConnectionResponse { went_offline }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.into_inner();
        validate_instance(&r.instance_id)?;
        if r.connections.len() > MAX_HEARTBEAT_CONNECTIONS {
            return Err(Error::invalid(
                "connections",
                format!("at most {MAX_HEARTBEAT_CONNECTIONS} connections per heartbeat"),
            )
            .into());
        }
        let conns = r
            .connections
            .iter()
            .map(|c| parse_connection(Some(c)))
            .collect::<Result<Vec<_>, _>>()?;
        let refreshed = self.store.heartbeat(&r.instance_id, &conns).await?;
        tracing::debug!(instance = %r.instance_id, connections = conns.len(), refreshed, "heartbeat");
        Ok(Response::new(HeartbeatResponse {
            ttl_seconds: self.store.ttl().as_secs_f64().ceil() as u32,
        }))
    }

    async fn get_presence(
        &self,
        request: Request<GetPresenceRequest>,
    ) -> Result<Response<GetPresenceResponse>, Status> {
        let r = request.into_inner();
        let users = parse_user_ids("user_ids", &r.user_ids, MAX_PRESENCE_IDS)?;
        let observed = self.store.observe(&users, true).await?;
        let presence = users
            .iter()
            .zip(observed)
            .map(|(user, o)| {
                let online = o.state.devices > 0;
                // An online user is seen now; an offline one when it last left, or
                // when its last registration expired if no sweep recorded that yet.
                let last_seen = if online {
                    Some(o.now_ms)
                } else {
                    o.last_seen_ms.max(o.state.expired_ms)
                };
                UserPresence {
                    user_id: user.to_string(),
                    online,
                    devices: o.state.devices,
                    last_seen: last_seen.map(timestamp_ms),
                }
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
        let observed = self.store.observe(&users, false).await?;
        let states: Vec<_> = users
            .into_iter()
            .zip(observed.into_iter().map(|o| o.state))
            .collect();
        let routes = routes(&states)
            .into_iter()
            .map(|(instance_id, users)| InstanceUsers {
                instance_id,
                user_ids: users.iter().map(ToString::to_string).collect(),
            })
            .collect();
        Ok(Response::new(RouteUsersResponse { routes }))
    }
}
