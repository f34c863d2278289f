//! Managed infrastructure: a single-replica StatefulSet with a PersistentVolumeClaim and a
//! headless Service per datastore, for development and kind.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ClusterRef;
use super::pod::{container_security, pod_security, secret_env};
use crate::crd::{BeehiveClusterSpec, DatastoreSpec, SearchBackend, SecretKeyRef};

/// A piece of infrastructure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Datastore {
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
    /// RabbitMQ.
    RabbitMq,
    /// Elasticsearch.
    Elasticsearch,
}

/// User name in the generated credentials.
pub const MANAGED_USER: &str = "beehive";
/// Database name of the managed PostgreSQL.
pub const MANAGED_DATABASE: &str = "beehive";

impl Datastore {
    /// Every datastore.
    pub const ALL: [Datastore; 4] = [
        Datastore::Postgres,
        Datastore::Redis,
        Datastore::RabbitMq,
        Datastore::Elasticsearch,
    ];

    /// Name used in object names and labels.
    pub fn name(self) -> &'static str {
        match self {
            Datastore::Postgres => "postgres",
            Datastore::Redis => "redis",
            Datastore::RabbitMq => "rabbitmq",
            Datastore::Elasticsearch => "elasticsearch",
        }
    }

    /// The spec of this datastore (None: Elasticsearch not configured).
    pub fn spec(self, spec: &BeehiveClusterSpec) -> Option<&DatastoreSpec> {
        match self {
            Datastore::Postgres => Some(&spec.postgres),
            Datastore::Redis => Some(&spec.redis),
            Datastore::RabbitMq => Some(&spec.rabbitmq),
            Datastore::Elasticsearch => spec.elasticsearch.as_ref(),
        }
    }

    /// Whether the installation needs it.
    pub fn in_use(self, spec: &BeehiveClusterSpec) -> bool {
        match self {
            Datastore::Elasticsearch => {
                spec.search.backend == SearchBackend::Elasticsearch && spec.elasticsearch.is_some()
            }
            _ => true,
        }
    }

    /// The environment variable carrying its URL.
    pub fn env_var(self) -> &'static str {
        match self {
            Datastore::Postgres => "BEEHIVE_DATABASE_URL",
            Datastore::Redis => "BEEHIVE_REDIS_URL",
            Datastore::RabbitMq => "BEEHIVE_AMQP_URL",
            Datastore::Elasticsearch => "BEEHIVE_ELASTICSEARCH_URL",
        }
    }

    /// Service port.
    pub fn port(self) -> i32 {
        match self {
            Datastore::Postgres => 5432,
            Datastore::Redis => 6379,
            Datastore::RabbitMq => 5672,
            Datastore::Elasticsearch => 9200,
        }
    }

    /// Pinned default image.
    pub fn default_image(self) -> &'static str {
        match self {
            Datastore::Postgres => "docker.io/library/postgres:17.6-alpine",
            Datastore::Redis => "docker.io/library/redis:7.4-alpine",
            Datastore::RabbitMq => "docker.io/library/rabbitmq:4.1-alpine",
            Datastore::Elasticsearch => "docker.elastic.co/elasticsearch/elasticsearch:8.19.4",
        }
    }

    /// uid/gid the image's server runs as (the images' own users).
    fn user(self) -> (i64, i64) {
        match self {
            Datastore::Postgres => (70, 70),
            Datastore::Redis => (999, 1000),
            Datastore::RabbitMq => (100, 101),
            Datastore::Elasticsearch => (1000, 1000),
        }
    }

    /// Where the data volume is mounted.
    fn data_path(self) -> &'static str {
        match self {
            Datastore::Postgres => "/var/lib/postgresql/data",
            Datastore::Redis => "/data",
            Datastore::RabbitMq => "/var/lib/rabbitmq",
            Datastore::Elasticsearch => "/usr/share/elasticsearch/data",
        }
    }

    /// The URL the services use, given the generated password.
    pub fn url(self, host: &str, password: &str) -> String {
        match self {
            Datastore::Postgres => {
                format!("postgres://{MANAGED_USER}:{password}@{host}:5432/{MANAGED_DATABASE}")
            }
            Datastore::Redis => format!("redis://:{password}@{host}:6379"),
            Datastore::RabbitMq => format!("amqp://{MANAGED_USER}:{password}@{host}:5672/%2f"),
            Datastore::Elasticsearch => format!("http://elastic:{password}@{host}:9200"),
        }
    }

    /// User name in the generated Secret.
    pub fn user_name(self) -> &'static str {
        match self {
            Datastore::Elasticsearch => "elastic",
            _ => MANAGED_USER,
        }
    }
}

/// Host name of a managed datastore.
pub fn host(c: &ClusterRef<'_>, ds: Datastore) -> String {
    format!("{}.{}.svc", c.child_name(ds.name()), c.namespace)
}

/// The headless Service of a managed datastore.
pub fn service(c: &ClusterRef<'_>, ds: Datastore) -> Service {
    Service {
        metadata: c.meta(c.child_name(ds.name()), ds.name()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(c.selector_labels(ds.name())),
            ports: Some(vec![ServicePort {
                name: Some(ds.name().into()),
                port: ds.port(),
                target_port: Some(IntOrString::Int(ds.port())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn password_env(name: &str, secret: &str) -> EnvVar {
    secret_env(
        name,
        &SecretKeyRef {
            name: secret.into(),
            key: "password".into(),
        },
    )
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn exec_probe(cmd: &str, initial: i32, period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["sh".into(), "-c".into(), cmd.into()]),
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn tcp_probe(port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            host: None,
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

/// The StatefulSet of a managed datastore.
pub fn stateful_set(c: &ClusterRef<'_>, ds: Datastore) -> StatefulSet {
    let spec = ds.spec(&c.cluster.spec).cloned().unwrap_or_default();
    let secret = c.child_name(ds.name());
    let image = spec
        .managed
        .image
        .clone()
        .unwrap_or_else(|| ds.default_image().into());
    let (uid, gid) = ds.user();
    let mut env = Vec::new();
    let mut args = Vec::new();
    let mut volumes = vec![empty_dir("tmp")];
    let mut mounts = vec![mount("data", ds.data_path()), mount("tmp", "/tmp")];
    let mut read_only_root = true;
    let (readiness, liveness) = match ds {
        Datastore::Postgres => {
            env.push(plain_env("POSTGRES_USER", MANAGED_USER));
            env.push(plain_env("POSTGRES_DB", MANAGED_DATABASE));
            env.push(password_env("POSTGRES_PASSWORD", &secret));
            env.push(plain_env("PGDATA", "/var/lib/postgresql/data/pgdata"));
            volumes.push(empty_dir("run"));
            mounts.push(mount("run", "/var/run/postgresql"));
            let ready = format!("pg_isready -h 127.0.0.1 -U {MANAGED_USER} -d {MANAGED_DATABASE}");
            (exec_probe(&ready, 5, 5, 6), exec_probe(&ready, 30, 10, 6))
        }
        Datastore::Redis => {
            env.push(password_env("REDIS_PASSWORD", &secret));
            args = vec![
                "--requirepass".into(),
                "$(REDIS_PASSWORD)".into(),
                "--appendonly".into(),
                "yes".into(),
                "--dir".into(),
                "/data".into(),
            ];
            let ping = "redis-cli -a \"$REDIS_PASSWORD\" --no-auth-warning ping | grep -q PONG";
            (exec_probe(ping, 2, 5, 6), tcp_probe(6379, 10, 6))
        }
        Datastore::RabbitMq => {
            env.push(plain_env("RABBITMQ_DEFAULT_USER", MANAGED_USER));
            env.push(password_env("RABBITMQ_DEFAULT_PASS", &secret));
            env.push(plain_env("RABBITMQ_NODENAME", "rabbit@localhost"));
            // The image writes its configuration under /etc/rabbitmq at start.
            read_only_root = false;
            (
                exec_probe("rabbitmq-diagnostics -q ping", 10, 10, 6),
                exec_probe("rabbitmq-diagnostics -q status", 60, 30, 6),
            )
        }
        Datastore::Elasticsearch => {
            env.push(plain_env("discovery.type", "single-node"));
            env.push(plain_env("node.store.allow_mmap", "false"));
            env.push(plain_env("xpack.security.enabled", "true"));
            env.push(plain_env("xpack.security.http.ssl.enabled", "false"));
            env.push(plain_env("xpack.security.transport.ssl.enabled", "false"));
            env.push(plain_env("ES_JAVA_OPTS", "-Xms512m -Xmx512m"));
            env.push(password_env("ELASTIC_PASSWORD", &secret));
            // Elasticsearch keeps its keystore and logs under its install directory.
            read_only_root = false;
            (tcp_probe(9200, 10, 12), tcp_probe(9200, 20, 6))
        }
    };
    let default_resources = match ds {
        Datastore::Elasticsearch => resources("100m", "1Gi", "1536Mi"),
        Datastore::RabbitMq => resources("50m", "256Mi", "512Mi"),
        _ => resources("50m", "64Mi", "512Mi"),
    };
    let container = Container {
        name: ds.name().into(),
        image: Some(image),
        image_pull_policy: Some("IfNotPresent".into()),
        args: (!args.is_empty()).then_some(args),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(ds.name().chars().take(15).collect()),
            container_port: ds.port(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(readiness),
        liveness_probe: Some(liveness),
        resources: Some(spec.managed.resources.clone().unwrap_or(default_resources)),
        security_context: Some(container_security(Some(uid), Some(gid), read_only_root)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let labels = c.labels(ds.name());
    let mut pod_labels = c.selector_labels(ds.name());
    pod_labels.insert(super::labels::PART_OF.into(), super::APP_NAME.into());
    let mut pod_sec: PodSecurityContext = pod_security();
    pod_sec.run_as_user = Some(uid);
    pod_sec.run_as_group = Some(gid);
    pod_sec.fs_group = Some(gid);
    StatefulSet {
        metadata: ObjectMeta {
            labels: Some(labels),
            ..c.meta(c.child_name(ds.name()), ds.name())
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(c.child_name(ds.name())),
            selector: LabelSelector {
                match_labels: Some(c.selector_labels(ds.name())),
                match_expressions: None,
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Delete".into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(pod_sec),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: spec.managed.storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".into(),
                            spec.managed.storage.size.clone(),
                        )])),
                        limits: None,
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            }]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Requests and a memory limit.
pub fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity(cpu.into())),
            ("memory".into(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity(memory_limit.into()),
        )])),
        claims: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn managed_postgres_is_hardened_single_replica_with_pvc() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let r = ClusterRef::new(&c).unwrap();
        let sts = stateful_set(&r, Datastore::Postgres);
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("demo-postgres"));
        let pvc = &spec.volume_claim_templates.unwrap()[0];
        assert_eq!(
            pvc.spec
                .as_ref()
                .unwrap()
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"]
                .0,
            "1Gi"
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        assert_eq!(pod.security_context.as_ref().unwrap().run_as_user, Some(70));
        let ctr = &pod.containers[0];
        let env = ctr.env.as_ref().unwrap();
        let pw = env.iter().find(|e| e.name == "POSTGRES_PASSWORD").unwrap();
        let sel = pw
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (sel.name.as_str(), sel.key.as_str()),
            ("demo-postgres", "password")
        );
        let sc = ctr.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }

    #[test]
    fn urls_have_the_shape_the_services_expect() {
        assert_eq!(
            Datastore::Postgres.url("h", "p"),
            "postgres://beehive:p@h:5432/beehive"
        );
        assert_eq!(Datastore::Redis.url("h", "p"), "redis://:p@h:6379");
        assert_eq!(
            Datastore::RabbitMq.url("h", "p"),
            "amqp://beehive:p@h:5672/%2f"
        );
        assert_eq!(
            Datastore::Elasticsearch.url("h", "p"),
            "http://elastic:p@h:9200"
        );
    }

    #[test]
    fn elasticsearch_only_with_its_backend() {
        let mut spec = BeehiveClusterSpec::default();
        assert!(!Datastore::Elasticsearch.in_use(&spec));
        spec.search.backend = SearchBackend::Elasticsearch;
        spec.elasticsearch = Some(DatastoreSpec::default());
        assert!(Datastore::Elasticsearch.in_use(&spec));
    }
}
