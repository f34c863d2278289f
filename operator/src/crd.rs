//! The `BeehiveCluster` custom resource (`beehive.dev/v1alpha1`): spec, status, defaults and
//! CEL validation rules.
//!
//! The CRD YAML in `crds/` is generated from these types by `beehive-operator crd`
//! ([`crd`]), never edited by hand. Every doc comment below becomes a field description, so
//! `kubectl explain beehivecluster.spec...` is the reference.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the custom resource.
pub const GROUP: &str = "beehive.dev";
/// API version of the custom resource.
pub const VERSION: &str = "v1alpha1";
/// Longest `metadata.name` a BeehiveCluster may have, so that every child name
/// (`<name>-elasticsearch-0`, `<name>-migrate-<hash>`, StatefulSet revision labels) stays a
/// valid DNS label.
pub const MAX_NAME_LEN: usize = 38;

/// Generic bounds added to every string, list and map of the schema that has none of its own
/// (the embedded Kubernetes types carry none), so CEL rules stay within the API server's cost
/// budget.
pub const DEFAULT_MAX_STRING: u64 = 4096;
/// See [`DEFAULT_MAX_STRING`].
pub const DEFAULT_MAX_ITEMS: u64 = 64;
/// See [`DEFAULT_MAX_STRING`].
pub const DEFAULT_MAX_PROPERTIES: u64 = 64;

/// A Beehive installation: the eight Beehive components (gateway, auth, user, social,
/// message, presence, search, file), their configuration and where their infrastructure
/// (PostgreSQL, Redis, RabbitMQ, Elasticsearch) lives.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "beehive.dev",
    version = "v1alpha1",
    kind = "BeehiveCluster",
    plural = "beehiveclusters",
    shortname = "bhc",
    category = "beehive",
    namespaced,
    status = "BeehiveClusterStatus",
    doc = "BeehiveCluster describes one Beehive instant-messaging installation. The beehive-operator turns it into ConfigMaps, Secrets, a migration Job, Deployments/StatefulSets, Services, PodDisruptionBudgets and, optionally, an Ingress, NetworkPolicies and a ServiceMonitor.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether every component is ready"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Pending, Progressing, Ready, Degraded or Paused"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version", description = "Image tag every component runs"),
    printcolumn(name = "Gateway", type_ = "string", json_path = ".status.gatewayEndpoint", description = "Where clients reach the gateway"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 38").message("metadata.name must be at most 38 characters so that the names of the objects the operator creates stay valid").reason(Reason::FieldValueInvalid)
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.search.backend != 'elasticsearch' || has(self.elasticsearch)").message("spec.elasticsearch is required when spec.search.backend is elasticsearch").field_path(".elasticsearch"),
    validation = Rule::new("self.search.backend != 'embedded' || self.search.replicas <= 1").message("the embedded search index lives on one pod: spec.search.replicas must be 0 or 1 with the embedded backend (use elasticsearch to scale search)").field_path(".search.replicas"),
    validation = Rule::new("self.search.backend != 'embedded' || !has(self.search.autoscaling)").message("the embedded search index lives on one pod: spec.search.autoscaling needs the elasticsearch backend").field_path(".search.autoscaling"),
    validation = Rule::new("!has(self.file.storage.volume) || self.file.storage.volume.accessMode == 'ReadWriteMany' || self.file.replicas <= 1").message("a ReadWriteOnce file volume can be mounted by one pod only: use accessMode ReadWriteMany or s3 storage for spec.file.replicas > 1").field_path(".file.replicas"),
    validation = Rule::new("!has(self.file.storage.volume) || self.file.storage.volume.accessMode == 'ReadWriteMany' || !has(self.file.autoscaling) || self.file.autoscaling.maxReplicas <= 1").message("a ReadWriteOnce file volume can be mounted by one pod only: use accessMode ReadWriteMany or s3 storage to autoscale spec.file").field_path(".file.autoscaling"),
    validation = Rule::new("!has(oldSelf.installation) || (has(self.installation) && self.installation == oldSelf.installation)").message("spec.installation is immutable: it prefixes every Redis key and RabbitMQ queue of the installation").field_path(".installation"),
    validation = Rule::new("self.postgres.mode in ['managed', 'external', 'cloudnativepg'] && !has(self.postgres.rabbitmqOperator) && !has(self.postgres.eck)").message("spec.postgres.mode is managed, external or cloudnativepg (rabbitmqOperator and eck do not apply to PostgreSQL)").field_path(".postgres.mode"),
    validation = Rule::new("self.redis.mode in ['managed', 'external'] && !has(self.redis.cloudnativepg) && !has(self.redis.rabbitmqOperator) && !has(self.redis.eck)").message("spec.redis.mode is managed or external").field_path(".redis.mode"),
    validation = Rule::new("self.rabbitmq.mode in ['managed', 'external', 'rabbitmq-operator'] && !has(self.rabbitmq.cloudnativepg) && !has(self.rabbitmq.eck)").message("spec.rabbitmq.mode is managed, external or rabbitmq-operator (cloudnativepg and eck do not apply to RabbitMQ)").field_path(".rabbitmq.mode"),
    validation = Rule::new("!has(self.elasticsearch) || (self.elasticsearch.mode in ['managed', 'external', 'eck'] && !has(self.elasticsearch.cloudnativepg) && !has(self.elasticsearch.rabbitmqOperator))").message("spec.elasticsearch.mode is managed, external or eck (cloudnativepg and rabbitmqOperator do not apply to Elasticsearch)").field_path(".elasticsearch")
)]
pub struct BeehiveClusterSpec {
    /// The `beehive` container image that every component runs (`beehive serve <component>`,
    /// `beehive migrate`).
    #[serde(default)]
    pub image: ImageSpec,

    /// Stop reconciling this cluster: the operator leaves every child object as it is and
    /// reports the Paused phase until this is set back to false.
    #[serde(default)]
    pub paused: bool,

    /// Prefix of every Redis key and RabbitMQ exchange/queue name (BEEHIVE_INSTALLATION), so
    /// installations sharing a Redis or RabbitMQ never see each other's data. Defaults to
    /// the BeehiveCluster's name. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$")
    )]
    pub installation: Option<String>,

    /// Logging of every component.
    #[serde(default)]
    pub logging: LoggingSpec,

    /// OTLP/gRPC endpoint traces are exported to (BEEHIVE_OTLP_ENDPOINT), e.g.
    /// http://otel-collector.observability.svc:4317. Tracing export is off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub otlp_endpoint: Option<String>,

    /// The HTTP/WebSocket edge: settings of the gateway Deployment, its Service and Ingress.
    #[serde(default)]
    pub gateway: GatewaySpec,
    /// The auth component (sessions, JWT issue/rotate/revoke).
    #[serde(default)]
    pub auth: AuthSpec,
    /// The user component (registration, profiles, email codes).
    #[serde(default)]
    pub user: WorkloadSpec,
    /// The social component (friend requests, friendships).
    #[serde(default)]
    pub social: WorkloadSpec,
    /// The message component (conversations, messages, outbox relay).
    #[serde(default)]
    pub message: WorkloadSpec,
    /// The presence component (online devices, gateway routing).
    #[serde(default)]
    pub presence: WorkloadSpec,
    /// The search component and its backend.
    #[serde(default)]
    pub search: SearchSpec,
    /// The file component and where files are stored.
    #[serde(default)]
    pub file: FileSpec,

    /// PostgreSQL, the source of truth of every component. `managed` (default) runs a
    /// single-replica StatefulSet for development and kind; production points `external` at
    /// a Secret holding the URL of a real database.
    #[serde(default)]
    pub postgres: DatastoreSpec,
    /// Redis (presence, revocation cache, rate limits).
    #[serde(default)]
    pub redis: DatastoreSpec,
    /// RabbitMQ (message fan-out to gateways, search indexing queue).
    #[serde(default)]
    pub rabbitmq: DatastoreSpec,
    /// Elasticsearch; required when spec.search.backend is elasticsearch, ignored otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<DatastoreSpec>,

    /// Largest PostgreSQL connection pool of each pod (BEEHIVE_DATABASE_MAX_CONNECTIONS).
    #[serde(default = "default_db_max_connections")]
    #[schemars(range(min = 1, max = 1000))]
    pub database_max_connections: i32,

    /// The Ed25519 key that signs access tokens.
    #[serde(default)]
    pub jwt: JwtSpec,

    /// Restrict traffic to the installation's pods with NetworkPolicies.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Prometheus Operator integration.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
}

fn default_db_max_connections() -> i32 {
    10
}

/// Which `beehive` image to run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository, without tag.
    #[serde(default = "default_image_repository")]
    #[schemars(length(min = 1, max = 255))]
    pub repository: String,
    /// Image tag. Changing it runs the migration Job of the new version and rolls every
    /// component; the new pods wait (init container `beehive migrate --wait`) until the
    /// schema is current.
    #[serde(default = "default_image_tag")]
    #[schemars(length(min = 1, max = 128))]
    pub tag: String,
    /// Image pull policy of every container.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// Names of Secrets (type kubernetes.io/dockerconfigjson) used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 253)))]
    pub pull_secrets: Vec<String>,
}

fn default_image_repository() -> String {
    "ghcr.io/beehive-im/beehive".into()
}
fn default_image_tag() -> String {
    env!("CARGO_PKG_VERSION").into()
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_image_repository(),
            tag: default_image_tag(),
            pull_policy: PullPolicy::default(),
            pull_secrets: Vec::new(),
        }
    }
}

impl ImageSpec {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// Kubernetes image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the image is not on the node.
    #[default]
    IfNotPresent,
    /// Never pull (images loaded into the node, e.g. `kind load`).
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Log settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    /// Log level or tracing filter (BEEHIVE_LOG_LEVEL), e.g. `info` or
    /// `info,beehive_message=debug`.
    #[serde(default = "default_log_level")]
    #[schemars(length(min = 1, max = 256))]
    pub level: String,
    /// Log format (BEEHIVE_LOG_FORMAT).
    #[serde(default)]
    pub format: LogFormat,
}

fn default_log_level() -> String {
    "info".into()
}

// By hand, not derived: the derived default (an empty level) became the schema's default
// for `spec.logging`, which fails the field's own minLength and made the API server refuse
// the CRD.
impl Default for LoggingSpec {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

/// Log line format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable text.
    Text,
}

/// Settings every component's pods share: replicas, resources, scheduling and an escape
/// hatch to override the pod template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Number of pods. 0 stops the component. A PodDisruptionBudget (maxUnavailable 1) is
    /// created when this is greater than 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Scale the pods with a HorizontalPodAutoscaler (autoscaling/v2) on CPU instead of a
    /// fixed `replicas`, which the operator then leaves to the autoscaler. Not for search
    /// with the embedded index, which lives on one pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// CPU/memory requests and limits of the component container. When unset the operator
    /// requests 50m CPU and 64Mi memory and limits memory to 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 32))]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the pods. When unset the operator adds a preferred pod anti-affinity
    /// across nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints of the pods. The operator fills in the label selector
    /// of the component when a constraint has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Extra annotations of the pods (e.g. for a service mesh).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 32))]
    pub pod_annotations: BTreeMap<String, String>,
    /// Escape hatch: a partial PodTemplateSpec merged over the one the operator builds
    /// (objects merge key by key, `containers`, `initContainers` and `volumes` merge by
    /// `name`, other lists replace). Use it for what the fields above do not cover, e.g.
    /// `{"spec": {"priorityClassName": "high", "containers": [{"name": "beehive",
    /// "env": [{"name": "RUST_BACKTRACE", "value": "1"}]}]}}`. Not validated by the
    /// operator: the API server validates the resulting pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub pod_overrides: Option<serde_json::Value>,
}

fn default_replicas() -> i32 {
    1
}

/// Horizontal autoscaling of a component on CPU utilisation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas").field_path(".minReplicas"))]
pub struct AutoscalingSpec {
    /// Fewest pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of the CPU request) the autoscaler aims for (named
    /// as in HorizontalPodAutoscaler v1).
    #[serde(
        default = "default_cpu_target",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_cpu_target() -> i32 {
    70
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            autoscaling: None,
            resources: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            topology_spread_constraints: Vec::new(),
            pod_annotations: BTreeMap::new(),
            pod_overrides: None,
        }
    }
}

fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The gateway: the only component clients talk to (HTTP REST and WebSocket on :8080).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Pods of the gateway.
    #[serde(flatten)]
    pub workload: WorkloadSpec,
    /// The gateway Service.
    #[serde(default)]
    pub service: GatewayServiceSpec,
    /// An Ingress in front of the gateway Service; none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Origins allowed by CORS (BEEHIVE_CORS_ORIGINS), e.g. https://chat.example.com.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub cors_origins: Vec<String>,
    /// CIDRs of proxies whose X-Forwarded-For is trusted (BEEHIVE_TRUSTED_PROXIES), e.g. the
    /// ingress controller's pod network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 64)))]
    pub trusted_proxies: Vec<String>,
    /// Per-client-IP rate limits of the gateway (BEEHIVE_RATE_LIMITS). Turn off only for
    /// load tests.
    #[serde(default = "default_true")]
    pub rate_limits: bool,
    /// Seconds over which a stopping gateway sends its clients `reconnect` and closes their
    /// sockets in waves, so a rollout causes no reconnect storm
    /// (BEEHIVE_GATEWAY_DRAIN_WINDOW). A terminating pod first pauses 5 s (preStop) so it
    /// leaves the Service's endpoints before the drain starts; its termination grace period
    /// is this plus 20 s.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 600))]
    pub drain_seconds: i64,
}

fn default_drain_seconds() -> i64 {
    30
}

/// Seconds a gateway pod gets after SIGTERM beyond its drain window: the gateway's own
/// bound on a drain overrunning (5 s) and on in-flight HTTP requests (5 s), with margin.
pub const GATEWAY_EXIT_GRACE_SECONDS: i64 = 15;

/// Seconds a terminating gateway pod pauses (preStop) before it gets SIGTERM, so endpoint
/// controllers and load balancers stop routing to it before it starts draining.
pub const GATEWAY_PRESTOP_SECONDS: i64 = 5;

impl Default for GatewaySpec {
    fn default() -> Self {
        Self {
            workload: WorkloadSpec::default(),
            service: GatewayServiceSpec::default(),
            ingress: None,
            cors_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            rate_limits: true,
            drain_seconds: default_drain_seconds(),
        }
    }
}

/// How the gateway Service is exposed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.nodePort) || self.type != 'ClusterIP'").message("nodePort needs type NodePort or LoadBalancer").field_path(".nodePort"),
    validation = Rule::new("!has(self.loadBalancerClass) || self.type == 'LoadBalancer'").message("loadBalancerClass needs type LoadBalancer").field_path(".loadBalancerClass")
)]
pub struct GatewayServiceSpec {
    /// Service type.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port of the Service (the pods listen on 8080).
    #[serde(default = "default_gateway_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Fixed node port when type is NodePort or LoadBalancer (kind maps 30080 to
    /// localhost:8080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// Annotations of the Service (e.g. cloud load-balancer settings).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 32))]
    pub annotations: BTreeMap<String, String>,
    /// Load balancer class when type is LoadBalancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub load_balancer_class: Option<String>,
    /// externalTrafficPolicy for NodePort/LoadBalancer Services (Local keeps client IPs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
}

fn default_gateway_port() -> i32 {
    8080
}

impl Default for GatewayServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            port: default_gateway_port(),
            node_port: None,
            annotations: BTreeMap::new(),
            load_balancer_class: None,
            external_traffic_policy: None,
        }
    }
}

/// Kubernetes Service type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster (and through an Ingress).
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through a cloud load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Service externalTrafficPolicy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TrafficPolicy {
    /// Spread over every node.
    Cluster,
    /// Only to pods on the receiving node; keeps the client address.
    Local,
}

/// An Ingress for the gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name clients use, e.g. chat.example.com.
    #[schemars(
        length(min = 1, max = 253),
        regex(
            pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
        )
    )]
    pub host: String,
    /// IngressClass to use; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
    /// Path prefix routed to the gateway.
    #[serde(default = "default_ingress_path")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/"))]
    pub path: String,
    /// Annotations of the Ingress (e.g. cert-manager.io/cluster-issuer, proxy timeouts for
    /// WebSockets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 32))]
    pub annotations: BTreeMap<String, String>,
    /// Serve HTTPS with the certificate in this Secret; plain HTTP when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<IngressTlsSpec>,
}

fn default_ingress_path() -> String {
    "/".into()
}

/// TLS of the gateway Ingress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressTlsSpec {
    /// Secret (type kubernetes.io/tls) holding the certificate for the host; cert-manager
    /// can create it from an Ingress annotation.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// The auth component and token settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Pods of auth.
    #[serde(flatten)]
    pub workload: WorkloadSpec,
    /// Lifetime of access tokens (BEEHIVE_ACCESS_TOKEN_TTL), e.g. 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,6}(s|m|h|d)$"), length(max = 8))]
    pub access_token_ttl: Option<String>,
    /// Lifetime of refresh tokens (BEEHIVE_REFRESH_TOKEN_TTL), e.g. 30d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,6}(s|m|h|d)$"), length(max = 8))]
    pub refresh_token_ttl: Option<String>,
    /// Require email verification at registration (BEEHIVE_EMAIL_VERIFICATION). Without
    /// spec.auth.smtp codes are only logged (development).
    #[serde(default = "default_true")]
    pub email_verification: bool,
    /// Outgoing mail for verification codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSpec>,
}

impl Default for AuthSpec {
    fn default() -> Self {
        Self {
            workload: WorkloadSpec::default(),
            access_token_ttl: None,
            refresh_token_ttl: None,
            email_verification: true,
            smtp: None,
        }
    }
}

/// SMTP settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmtpSpec {
    /// Secret key holding the SMTP URL (BEEHIVE_SMTP_URL), e.g.
    /// smtps://user:password@smtp.example.com:465.
    pub secret_ref: SecretKeyRef,
    /// Sender address (BEEHIVE_SMTP_FROM), e.g. "Beehive <no-reply@example.com>".
    #[schemars(length(min = 3, max = 256))]
    pub from: String,
}

/// A key of a Secret in the BeehiveCluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key in the Secret's data.
    #[serde(default = "default_url_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_url_key() -> String {
    "url".into()
}

/// The search component.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchSpec {
    /// Pods of search.
    #[serde(flatten)]
    pub workload: WorkloadSpec,
    /// Search backend (BEEHIVE_SEARCH_BACKEND). `embedded` keeps a local index
    /// (tantivy + jieba) on a PersistentVolume of a single-replica StatefulSet;
    /// `elasticsearch` uses spec.elasticsearch and scales horizontally.
    #[serde(default)]
    pub backend: SearchBackend,
    /// Volume of the embedded index (one per search pod).
    #[serde(default)]
    pub index_storage: VolumeSpec,
    /// Message events indexed in one commit at most (BEEHIVE_SEARCH_BATCH_SIZE).
    #[serde(default = "default_search_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: i32,
    /// Longest wait in milliseconds between the first event of a batch and its commit, i.e.
    /// until new messages are searchable (BEEHIVE_SEARCH_COMMIT_INTERVAL).
    #[serde(default = "default_search_commit_interval_ms")]
    #[schemars(range(min = 10, max = 60000))]
    pub commit_interval_ms: i32,
}

fn default_search_batch_size() -> i32 {
    500
}

fn default_search_commit_interval_ms() -> i32 {
    500
}

impl Default for SearchSpec {
    fn default() -> Self {
        Self {
            workload: WorkloadSpec::default(),
            backend: SearchBackend::default(),
            index_storage: VolumeSpec::default(),
            batch_size: default_search_batch_size(),
            commit_interval_ms: default_search_commit_interval_ms(),
        }
    }
}

/// Search backend.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchBackend {
    /// Local index in the search pod.
    #[default]
    Embedded,
    /// Elasticsearch 8.x (spec.elasticsearch).
    Elasticsearch,
}

impl SearchBackend {
    /// The value of BEEHIVE_SEARCH_BACKEND.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchBackend::Embedded => "embedded",
            SearchBackend::Elasticsearch => "elasticsearch",
        }
    }
}

/// A PersistentVolumeClaim request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// Requested size.
    #[serde(default = "default_volume_size")]
    pub size: Quantity,
    /// StorageClass; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

fn default_volume_size() -> Quantity {
    Quantity("1Gi".into())
}

impl Default for VolumeSpec {
    fn default() -> Self {
        Self {
            size: default_volume_size(),
            storage_class_name: None,
        }
    }
}

/// The file component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSpec {
    /// Pods of file.
    #[serde(flatten)]
    pub workload: WorkloadSpec,
    /// Where uploaded files are stored.
    #[serde(default)]
    pub storage: FileStorageSpec,
}

/// File storage: exactly one of `volume` and `s3`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.volume) != has(self.s3)").message("set exactly one of spec.file.storage.volume and spec.file.storage.s3"))]
pub struct FileStorageSpec {
    /// A PersistentVolumeClaim (`<cluster>-files`) mounted into every file pod
    /// (BEEHIVE_FILE_STORAGE_DIR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<FileVolumeSpec>,
    /// An S3-compatible bucket: a Secret key holding its URL (BEEHIVE_FILE_S3_URL), e.g.
    /// s3://access:secret@minio.storage.svc:9000/beehive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<SecretKeyRef>,
}

impl Default for FileStorageSpec {
    fn default() -> Self {
        Self {
            volume: Some(FileVolumeSpec::default()),
            s3: None,
        }
    }
}

/// The file volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileVolumeSpec {
    /// Requested size.
    #[serde(default = "default_volume_size")]
    pub size: Quantity,
    /// StorageClass; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// Access mode; ReadWriteMany is needed for more than one file replica.
    #[serde(default)]
    pub access_mode: VolumeAccessMode,
}

impl Default for FileVolumeSpec {
    fn default() -> Self {
        Self {
            size: default_volume_size(),
            storage_class_name: None,
            access_mode: VolumeAccessMode::default(),
        }
    }
}

/// PersistentVolume access mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VolumeAccessMode {
    /// Mounted read-write by one node.
    #[default]
    ReadWriteOnce,
    /// Mounted read-write by many nodes.
    ReadWriteMany,
}

impl VolumeAccessMode {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeAccessMode::ReadWriteOnce => "ReadWriteOnce",
            VolumeAccessMode::ReadWriteMany => "ReadWriteMany",
        }
    }
}

/// Where a piece of infrastructure lives.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'external' || has(self.external)").message("mode external needs external.secretRef").field_path(".external"))]
pub struct DatastoreSpec {
    /// `managed`: the operator runs a single-replica StatefulSet with a PersistentVolumeClaim
    /// and generated credentials (development, kind; its data is deleted with the
    /// BeehiveCluster). `external`: use the server whose URL is in external.secretRef.
    /// Production engines run by their own operators, which must be installed in the cluster:
    /// `cloudnativepg` (spec.postgres only: a CloudNativePG Cluster, settings in
    /// `cloudnativepg`), `rabbitmq-operator` (spec.rabbitmq only: a RabbitmqCluster, settings
    /// in `rabbitmqOperator`), `eck` (spec.elasticsearch only: an ECK Elasticsearch, settings
    /// in `eck`).
    #[serde(default)]
    pub mode: DatastoreMode,
    /// The external server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatastore>,
    /// The managed server.
    #[serde(default)]
    pub managed: ManagedDatastore,
    /// The CloudNativePG Cluster of mode cloudnativepg (spec.postgres only). Its defaults
    /// apply when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudnativepg: Option<CloudNativePgSpec>,
    /// The RabbitmqCluster of mode rabbitmq-operator (spec.rabbitmq only). Its defaults apply
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq_operator: Option<RabbitmqOperatorSpec>,
    /// The ECK Elasticsearch of mode eck (spec.elasticsearch only). Its defaults apply when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eck: Option<EckSpec>,
}

fn default_operator_replicas() -> i32 {
    3
}

/// A PostgreSQL cluster run by CloudNativePG (postgresql.cnpg.io/v1 `Cluster`
/// `<cluster>-postgres`). The components use the Secret CloudNativePG generates for the
/// application user (`<cluster>-postgres-app`, key `uri`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudNativePgSpec {
    /// PostgreSQL instances: one primary and instances-1 streaming replicas.
    #[serde(default = "default_operator_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: i32,
    /// PostgreSQL image (CloudNativePG's imageName); CloudNativePG's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image_name: Option<String>,
    /// Data volume of each instance.
    #[serde(default)]
    pub storage: VolumeSpec,
    /// CPU/memory of each instance; CloudNativePG's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for CloudNativePgSpec {
    fn default() -> Self {
        Self {
            instances: default_operator_replicas(),
            image_name: None,
            storage: VolumeSpec::default(),
            resources: None,
        }
    }
}

/// A RabbitMQ cluster run by the RabbitMQ Cluster Operator (rabbitmq.com/v1beta1
/// `RabbitmqCluster` `<cluster>-rabbitmq`). The components use its default user
/// (`<cluster>-rabbitmq-default-user`, keys `username` and `password`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitmqOperatorSpec {
    /// RabbitMQ nodes; an odd number (1, 3, 5) so a network partition leaves one quorum.
    #[serde(default = "default_operator_replicas")]
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// RabbitMQ image; the RabbitMQ Cluster Operator's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image: Option<String>,
    /// Persistent volume of each node.
    #[serde(default)]
    pub storage: VolumeSpec,
    /// CPU/memory of each node (requests and limits only); the RabbitMQ Cluster Operator's
    /// default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for RabbitmqOperatorSpec {
    fn default() -> Self {
        Self {
            replicas: default_operator_replicas(),
            image: None,
            storage: VolumeSpec::default(),
            resources: None,
        }
    }
}

/// An Elasticsearch cluster run by ECK (elasticsearch.k8s.elastic.co/v1 `Elasticsearch`
/// `<cluster>-es`, one node set `default`, HTTP without TLS inside the cluster). The search
/// component uses the `elastic` user ECK generates (`<cluster>-es-es-elastic-user`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EckSpec {
    /// Elasticsearch version (8.x: the search component's client speaks the 8.x API).
    #[serde(default = "default_es_version")]
    #[schemars(length(min = 5, max = 32), regex(pattern = r"^8\.[0-9]+\.[0-9]+$"))]
    pub version: String,
    /// Elasticsearch nodes (all master-eligible data nodes).
    #[serde(default = "default_operator_replicas")]
    #[schemars(range(min = 1, max = 50))]
    pub count: i32,
    /// Data volume of each node.
    #[serde(default)]
    pub storage: VolumeSpec,
    /// CPU/memory of the elasticsearch container; ECK's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_es_version() -> String {
    "8.19.4".into()
}

impl Default for EckSpec {
    fn default() -> Self {
        Self {
            version: default_es_version(),
            count: default_operator_replicas(),
            storage: VolumeSpec::default(),
            resources: None,
        }
    }
}

/// Datastore mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DatastoreMode {
    /// The operator runs it.
    #[default]
    #[serde(rename = "managed")]
    Managed,
    /// It runs elsewhere.
    #[serde(rename = "external")]
    External,
    /// spec.postgres only: a CloudNativePG `Cluster` (postgresql.cnpg.io/v1).
    #[serde(rename = "cloudnativepg")]
    CloudNativePg,
    /// spec.rabbitmq only: a `RabbitmqCluster` of the RabbitMQ Cluster Operator
    /// (rabbitmq.com/v1beta1).
    #[serde(rename = "rabbitmq-operator")]
    RabbitmqOperator,
    /// spec.elasticsearch only: an ECK `Elasticsearch` (elasticsearch.k8s.elastic.co/v1).
    #[serde(rename = "eck")]
    Eck,
}

impl DatastoreMode {
    /// The spelling in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            DatastoreMode::Managed => "managed",
            DatastoreMode::External => "external",
            DatastoreMode::CloudNativePg => "cloudnativepg",
            DatastoreMode::RabbitmqOperator => "rabbitmq-operator",
            DatastoreMode::Eck => "eck",
        }
    }

    /// Whether another operator (CloudNativePG, the RabbitMQ Cluster Operator, ECK) runs the
    /// datastore from an object this operator creates.
    pub fn is_operator(self) -> bool {
        matches!(
            self,
            DatastoreMode::CloudNativePg | DatastoreMode::RabbitmqOperator | DatastoreMode::Eck
        )
    }
}

/// An external datastore.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatastore {
    /// Secret key holding the full URL with credentials: postgres://user:pass@host:5432/db,
    /// redis://:pass@host:6379, amqp://user:pass@host:5672/%2f or
    /// https://user:pass@host:9200. Pods roll when its content changes.
    pub secret_ref: SecretKeyRef,
}

/// A datastore the operator runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedDatastore {
    /// Image; a pinned upstream image of the datastore when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub image: Option<String>,
    /// Data volume.
    #[serde(default)]
    pub storage: VolumeSpec,
    /// CPU/memory of the datastore container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The access-token signing key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtSpec {
    /// Secret with key `signing-key.pem` (Ed25519 private key, PKCS#8 PEM), mounted into
    /// auth only (BEEHIVE_JWT_SECRET_FILE); gateways get the public key from auth. Defaults to `<cluster>-jwt`. When the
    /// Secret does not exist the operator generates it; it never overwrites one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_name: Option<String>,
}

/// NetworkPolicies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create NetworkPolicies: the gateway accepts traffic from anywhere on its HTTP port,
    /// the other components and the managed datastores only from the installation's pods;
    /// the admin port (:9090, metrics) from anywhere.
    #[serde(default)]
    pub enabled: bool,
}

/// Monitoring.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a ServiceMonitor (monitoring.coreos.com/v1) scraping /metrics on the admin port
    /// of every component. Needs the Prometheus Operator CRDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitorSpec>,
    /// Create a PrometheusRule (monitoring.coreos.com/v1) `<cluster>-alerts` with Beehive's
    /// alerts: a component down, p99 latency over 1 s, error rate over 1 %, outbox or queue
    /// backlog over 1000, search lag. Needs the Prometheus Operator CRDs.
    #[serde(default)]
    pub prometheus_rule: bool,
    /// Create a ConfigMap `<cluster>-dashboard` labelled `grafana_dashboard: "1"` holding
    /// Beehive's Grafana dashboard, for Grafana's dashboard sidecar to load.
    #[serde(default)]
    pub grafana_dashboard: bool,
    /// Extra labels of the PrometheusRule and the dashboard ConfigMap (e.g. release:
    /// kube-prometheus-stack so the Prometheus selects the rule).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub labels: BTreeMap<String, String>,
}

/// ServiceMonitor settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create the ServiceMonitor.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Scrape interval.
    #[serde(default = "default_scrape_interval")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,4}(s|m)$"), length(max = 8))]
    pub interval: String,
    /// Extra labels so a Prometheus selects it (e.g. release: kube-prometheus-stack).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub labels: BTreeMap<String, String>,
}

fn default_true() -> bool {
    true
}
fn default_scrape_interval() -> String {
    "30s".into()
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeehiveClusterStatus {
    /// The metadata.generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary: Pending, Progressing, Ready, Degraded or Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub phase: Option<String>,
    /// Conditions Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
    /// Replicas of each component, by component name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 16))]
    pub components: BTreeMap<String, ComponentStatus>,
    /// Where clients reach the gateway (http://host:port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub gateway_endpoint: Option<String>,
    /// Image whose migrations have completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub migrated_image: Option<String>,
    /// The image tag every component runs: set once all of them have rolled out to
    /// spec.image.tag, kept while a rollout to another tag is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub version: Option<String>,
    /// Operations of the search component that the operator ran for this cluster.
    #[serde(default, skip_serializing_if = "SearchStatus::is_empty")]
    pub search: SearchStatus,
}

/// Operations of the search component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchStatus {
    /// The last reindex asked for with the `beehive.dev/reindex-request` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reindex: Option<ReindexStatus>,
}

impl SearchStatus {
    /// Nothing recorded.
    pub fn is_empty(&self) -> bool {
        self.reindex.is_none()
    }
}

/// A reindex asked for with the `beehive.dev/reindex-request` annotation: the search
/// component rebuilds its index from the message history while the old index answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReindexStatus {
    /// The annotation's value, which is the request id sent to the search component (the
    /// same id never starts a second rebuild). For a rejected value, its first 128
    /// characters.
    #[schemars(length(max = 128))]
    pub request_id: String,
    /// Pending (not accepted by the search component yet: see message), Running,
    /// Succeeded, Failed, or Rejected (the annotation's value is not a valid request id).
    pub state: ReindexState,
    /// Messages written into the new index so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<i64>,
    /// When the search component started the rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the rebuild ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// What is happening: why it is pending, why it failed or was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// The search pod that accepted the request (gRPC address); it is asked for the
    /// outcome, since a rebuild's state is known only to the pod running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub endpoint: Option<String>,
}

/// Where a reindex is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReindexState {
    /// Asked for, not accepted by the search component yet (not ready, unreachable, or
    /// another reindex is running); retried with back-off.
    Pending,
    /// The search component is rebuilding the index.
    Running,
    /// The new index is in use.
    Succeeded,
    /// The rebuild failed; the previous index stays in use.
    Failed,
    /// The annotation's value is not a valid request id; nothing was asked.
    Rejected,
}

impl ReindexState {
    /// Whether nothing more will happen for this request id.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Rejected)
    }

    /// The name used in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Rejected => "Rejected",
        }
    }
}

/// Replicas of one component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
    /// Replicas running the current pod template.
    pub updated_replicas: i32,
}

/// The CRD as installed: kube-derive's output with generic bounds added to every string, list
/// and map of the schema that has none.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = BeehiveCluster::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            let mut value = match serde_json::to_value(&*schema) {
                Ok(v) => v,
                Err(_) => continue,
            };
            add_bounds(&mut value);
            if let Ok(bounded) = serde_json::from_value(value) {
                *schema = bounded;
            }
        }
    }
    crd
}

/// Adds `maxLength`/`maxItems`/`maxProperties` to every schema node lacking one.
fn add_bounds(node: &mut serde_json::Value) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    let ty = obj.get("type").and_then(|t| t.as_str()).map(str::to_owned);
    match ty.as_deref() {
        Some("string")
            if !obj.contains_key("maxLength")
                && !obj.contains_key("enum")
                && !obj.contains_key("format") =>
        {
            obj.insert("maxLength".into(), DEFAULT_MAX_STRING.into());
        }
        Some("array") if !obj.contains_key("maxItems") => {
            obj.insert("maxItems".into(), DEFAULT_MAX_ITEMS.into());
        }
        Some("object")
            if obj.contains_key("additionalProperties") && !obj.contains_key("maxProperties") =>
        {
            obj.insert("maxProperties".into(), DEFAULT_MAX_PROPERTIES.into());
        }
        _ => {}
    }
    for key in ["properties"] {
        if let Some(props) = obj.get_mut(key).and_then(|p| p.as_object_mut()) {
            for child in props.values_mut() {
                add_bounds(child);
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = obj.get_mut(key) {
            add_bounds(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get_mut(key).and_then(|l| l.as_array_mut()) {
            for child in list {
                add_bounds(child);
            }
        }
    }
}

/// The CRD as YAML (what `beehive-operator crd` prints).
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&crd())
}

/// The CRD YAML wrapped as a Helm template: installed and upgraded with the chart (Helm's
/// `crds/` directory is only installed, never upgraded), kept on uninstall.
pub fn helm_template(crd_yaml: &str) -> String {
    let mut out = String::from(
        "{{- /* Generated by `beehive-operator crd --helm` (hack/gen-crds.sh); do not edit. */ -}}\n{{- if .Values.crds.install }}\n",
    );
    let mut lines = crd_yaml.lines();
    // Insert Helm's keep policy into metadata.
    for line in lines.by_ref() {
        out.push_str(line);
        out.push('\n');
        if line == "metadata:" {
            out.push_str("  annotations:\n    helm.sh/resource-policy: keep\n  labels:\n    {{- include \"beehive-operator.labels\" . | nindent 4 }}\n");
            break;
        }
    }
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("{{- end }}\n");
    out
}

/// Markdown reference of the spec fields the operator defines (embedded Kubernetes types such
/// as `affinity` or `resources` are named, not expanded: `kubectl explain` shows them).
pub fn markdown_reference() -> String {
    let crd = serde_json::to_value(crd()).unwrap_or_default();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut out = String::from("| field | type | default | description |\n|---|---|---|---|\n");
    for section in ["spec", "status"] {
        reference_rows(&root["properties"][section], section, &mut out);
    }
    out
}

const EMBEDDED: &[&str] = &[
    "resources",
    "affinity",
    "tolerations",
    "topologySpreadConstraints",
    "conditions",
    "size",
    "podOverrides",
];

fn reference_rows(node: &serde_json::Value, path: &str, out: &mut String) {
    let Some(props) = node.get("properties").and_then(|p| p.as_object()) else {
        return;
    };
    for (name, prop) in props {
        let p = format!("{path}.{name}");
        let ty = match prop.get("type").and_then(|t| t.as_str()) {
            Some("array") => format!("[]{}", prop["items"]["type"].as_str().unwrap_or("object")),
            Some("object") if prop.get("additionalProperties").is_some() => "map".to_string(),
            Some(t) => t.to_string(),
            None if prop.get("x-kubernetes-int-or-string").is_some() => "quantity".into(),
            None => "object".into(),
        };
        let ty = match prop.get("enum").and_then(|e| e.as_array()) {
            Some(values) => values
                .iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" \\| "),
            None => ty,
        };
        let default = match prop.get("default") {
            Some(serde_json::Value::Object(_)) | None => String::new(),
            Some(v) => format!("`{v}`"),
        };
        let desc = prop["description"]
            .as_str()
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        let desc =
            if EMBEDDED.contains(&name.as_str()) && name != "podOverrides" && desc.len() > 200 {
                "Kubernetes type, see `kubectl explain`.".to_string()
            } else {
                desc
            };
        out.push_str(&format!("| `{p}` | {ty} | {default} | {desc} |\n"));
        if EMBEDDED.contains(&name.as_str()) {
            continue;
        }
        reference_rows(prop, &p, out);
        if let Some(items) = prop.get("items") {
            reference_rows(items, &format!("{p}[]"), out);
        }
        if let Some(ap) = prop.get("additionalProperties") {
            reference_rows(ap, &format!("{p}.<name>"), out);
        }
    }
}

/// Replaces the generated reference between the markers of docs/operator.md.
pub fn splice_reference(doc: &str, reference: &str) -> Option<String> {
    const START: &str = "<!-- crd-reference:start (generated by hack/gen-crds.sh) -->\n";
    const END: &str = "<!-- crd-reference:end -->";
    let start = doc.find(START)? + START.len();
    let end = doc[start..].find(END)? + start;
    Some(format!("{}{reference}{}", &doc[..start], &doc[end..]))
}
