//! What the operator needs to know of each Beehive component (the process contract of
//! DESIGN.md). The components themselves are `beehive_common`'s [`Component`], the type the
//! `beehive` binary serves, so the two cannot disagree on which components exist.

pub use beehive_common::config::Component;

use crate::crd::{BeehiveClusterSpec, WorkloadSpec};

/// Port of the gateway's HTTP/WebSocket listener.
pub const GATEWAY_HTTP_PORT: i32 = 8080;
/// Port of every process's admin HTTP server (/healthz, /readyz, /metrics).
pub const ADMIN_PORT: i32 = 9090;

/// Every component in the order the operator builds and reports them: the gateway, which
/// clients reach, first.
pub const ALL: [Component; 8] = [
    Component::Gateway,
    Component::Auth,
    Component::User,
    Component::Social,
    Component::Message,
    Component::Presence,
    Component::Search,
    Component::File,
];

/// The operator's view of a component: its ports, its settings in the spec and the
/// infrastructure it uses.
pub trait ComponentExt: Copy {
    /// The `<C>` of `BEEHIVE_<C>_ADDR` / `BEEHIVE_<C>_LISTEN`.
    fn env_name(self) -> &'static str;
    /// The port clients reach the component on: HTTP for the gateway, gRPC otherwise.
    fn port(self) -> i32;
    /// Whether the component serves gRPC (all but the gateway).
    fn is_grpc(self) -> bool;
    /// The component's pod settings in the spec.
    fn workload(self, spec: &BeehiveClusterSpec) -> &WorkloadSpec;
    /// Whether the component talks to PostgreSQL.
    fn uses_postgres(self) -> bool;
    /// Whether the component talks to Redis.
    fn uses_redis(self) -> bool;
    /// Whether the component talks to RabbitMQ.
    fn uses_rabbitmq(self) -> bool;
    /// Whether the component reads the JWT signing key. Only auth signs; gateways fetch the
    /// public keys from auth over gRPC, so the private key is not mounted anywhere else.
    fn uses_jwt(self) -> bool;
}

impl ComponentExt for Component {
    fn env_name(self) -> &'static str {
        match self {
            Component::Gateway => "GATEWAY",
            Component::Auth => "AUTH",
            Component::User => "USER",
            Component::Social => "SOCIAL",
            Component::Message => "MESSAGE",
            Component::Presence => "PRESENCE",
            Component::Search => "SEARCH",
            Component::File => "FILE",
        }
    }

    fn port(self) -> i32 {
        match self {
            Component::Gateway => GATEWAY_HTTP_PORT,
            grpc => i32::from(grpc.default_grpc_port()),
        }
    }

    fn is_grpc(self) -> bool {
        self != Component::Gateway
    }

    fn workload(self, spec: &BeehiveClusterSpec) -> &WorkloadSpec {
        match self {
            Component::Gateway => &spec.gateway.workload,
            Component::Auth => &spec.auth.workload,
            Component::User => &spec.user,
            Component::Social => &spec.social,
            Component::Message => &spec.message,
            Component::Presence => &spec.presence,
            Component::Search => &spec.search.workload,
            Component::File => &spec.file.workload,
        }
    }

    fn uses_postgres(self) -> bool {
        matches!(
            self,
            Component::Auth
                | Component::User
                | Component::Social
                | Component::Message
                | Component::File
        )
    }

    fn uses_redis(self) -> bool {
        matches!(
            self,
            Component::Gateway | Component::Auth | Component::Presence
        )
    }

    fn uses_rabbitmq(self) -> bool {
        matches!(
            self,
            Component::Gateway | Component::Message | Component::Search
        )
    }

    fn uses_jwt(self) -> bool {
        self == Component::Auth
    }
}
