//! The eight Beehive components and what each one needs (the process contract of DESIGN.md).

use crate::crd::{BeehiveClusterSpec, WorkloadSpec};

/// A Beehive component, served by `beehive serve <name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// HTTP + WebSocket edge on :8080.
    Gateway,
    /// gRPC :50050.
    Auth,
    /// gRPC :50051.
    User,
    /// gRPC :50052.
    Social,
    /// gRPC :50053.
    Message,
    /// gRPC :50054.
    Presence,
    /// gRPC :50055.
    Search,
    /// gRPC :50056.
    File,
}

/// Port of the gateway's HTTP/WebSocket listener.
pub const GATEWAY_HTTP_PORT: i32 = 8080;
/// Port of every process's admin HTTP server (/healthz, /readyz, /metrics).
pub const ADMIN_PORT: i32 = 9090;

impl Component {
    /// Every component, gateway first.
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

    /// The name used in `beehive serve <name>`, object names and labels.
    pub fn name(self) -> &'static str {
        match self {
            Component::Gateway => "gateway",
            Component::Auth => "auth",
            Component::User => "user",
            Component::Social => "social",
            Component::Message => "message",
            Component::Presence => "presence",
            Component::Search => "search",
            Component::File => "file",
        }
    }

    /// The `<C>` of `BEEHIVE_<C>_ADDR` / `BEEHIVE_<C>_LISTEN`.
    pub fn env_name(self) -> &'static str {
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

    /// The port clients reach the component on: HTTP for the gateway, gRPC otherwise.
    pub fn port(self) -> i32 {
        match self {
            Component::Gateway => GATEWAY_HTTP_PORT,
            Component::Auth => 50050,
            Component::User => 50051,
            Component::Social => 50052,
            Component::Message => 50053,
            Component::Presence => 50054,
            Component::Search => 50055,
            Component::File => 50056,
        }
    }

    /// Whether the component serves gRPC (all but the gateway).
    pub fn is_grpc(self) -> bool {
        self != Component::Gateway
    }

    /// The component's pod settings in the spec.
    pub fn workload(self, spec: &BeehiveClusterSpec) -> &WorkloadSpec {
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

    /// Whether the component talks to PostgreSQL.
    pub fn uses_postgres(self) -> bool {
        matches!(
            self,
            Component::Auth
                | Component::User
                | Component::Social
                | Component::Message
                | Component::File
        )
    }

    /// Whether the component talks to Redis.
    pub fn uses_redis(self) -> bool {
        matches!(
            self,
            Component::Gateway | Component::Auth | Component::Presence
        )
    }

    /// Whether the component talks to RabbitMQ.
    pub fn uses_rabbitmq(self) -> bool {
        matches!(
            self,
            Component::Gateway | Component::Message | Component::Search
        )
    }

    /// Whether the component reads the JWT signing key. Only auth signs; gateways fetch the
    /// public keys from auth over gRPC, so the private key is not mounted anywhere else.
    pub fn uses_jwt(self) -> bool {
        self == Component::Auth
    }
}
