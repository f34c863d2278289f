//! Pod templates of the Beehive components and the migration Job: hardened to the
//! restricted Pod Security Standard, with probes, the config hash and the
//! `beehive migrate --wait` init container.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, GRPCAction, HTTPGetAction, Lifecycle, LifecycleHandler,
    LocalObjectReference, ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, SleepAction, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::datastore::{Datastore, resources};
use super::{BuildError, CONFIG_HASH_ANNOTATION, ClusterRef, Inputs, labels};
use crate::component::ComponentExt as _;
use crate::component::{ADMIN_PORT, Component};
use crate::crd::{SearchBackend, SecretKeyRef};

/// uid/gid of the `beehive` image's user (distroless `nonroot`).
pub const BEEHIVE_UID: i64 = 65532;
/// Name of the main container in every component pod.
pub const MAIN_CONTAINER: &str = "beehive";
/// Where the JWT Secret is mounted.
pub const JWT_DIR: &str = "/etc/beehive/jwt";
/// Where the embedded search index lives.
pub const SEARCH_INDEX_DIR: &str = "/var/lib/beehive/search";
/// Where the file component stores files on a volume.
pub const FILE_STORAGE_DIR: &str = "/var/lib/beehive/files";

/// Pod security context of the restricted Pod Security Standard.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(BEEHIVE_UID),
        run_as_group: Some(BEEHIVE_UID),
        fs_group: Some(BEEHIVE_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// Container security context of the restricted Pod Security Standard.
pub fn container_security(
    uid: Option<i64>,
    gid: Option<i64>,
    read_only_root: bool,
) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        run_as_user: uid,
        run_as_group: gid,
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// An environment variable read from a Secret key.
pub fn secret_env(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Secret keys a component reads (None: the migration Job).
pub fn secret_refs_of(c: &ClusterRef<'_>, component: Option<Component>) -> Vec<SecretKeyRef> {
    secret_env_of(c, component)
        .iter()
        .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|s| SecretKeyRef {
            name: s.name.clone(),
            key: s.key.clone(),
        })
        .chain(
            component
                .filter(|comp| comp.uses_jwt())
                .map(|_| SecretKeyRef {
                    name: c.jwt_secret_name(),
                    key: super::secret::JWT_KEY.into(),
                }),
        )
        .collect()
}

/// The Secret-backed environment of a component (None: the migration Job): datastore URLs
/// (or the variables they are composed from), SMTP and S3 URLs.
pub fn secret_env_of(c: &ClusterRef<'_>, component: Option<Component>) -> Vec<EnvVar> {
    let spec = &c.cluster.spec;
    let mut out = Vec::new();
    let needs = |ds: Datastore| match component {
        None => ds == Datastore::Postgres,
        Some(comp) => match ds {
            Datastore::Postgres => comp.uses_postgres(),
            Datastore::Redis => comp.uses_redis(),
            Datastore::RabbitMq => comp.uses_rabbitmq(),
            Datastore::Elasticsearch => comp == Component::Search,
        },
    };
    for ds in c.datastores() {
        if needs(ds) {
            out.extend(c.datastore_env(ds));
        }
    }
    if component == Some(Component::User)
        && let Some(smtp) = &spec.auth.smtp
    {
        out.push(secret_env("BEEHIVE_SMTP_URL", &smtp.secret_ref));
    }
    if component == Some(Component::File)
        && let Some(s3) = &spec.file.storage.s3
    {
        out.push(secret_env("BEEHIVE_FILE_S3_URL", s3));
    }
    out
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn grpc_probe(port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port,
            service: None,
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn config_env_from(c: &ClusterRef<'_>) -> Vec<EnvFromSource> {
    vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: super::configmap::name(c),
            optional: Some(false),
        }),
        prefix: None,
        secret_ref: None,
    }]
}

fn instance_env() -> EnvVar {
    EnvVar {
        name: "BEEHIVE_INSTANCE_ID".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: "metadata.name".into(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn tmp_volume() -> Volume {
    Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: None,
            size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                "64Mi".into(),
            )),
        }),
        ..Volume::default()
    }
}

/// The `beehive migrate [--wait]` container.
pub fn migrate_container(c: &ClusterRef<'_>, name: &str, wait: bool) -> Container {
    let mut args = vec!["migrate".to_string()];
    if wait {
        args.push("--wait".into());
    }
    let mut env = vec![instance_env()];
    env.extend(secret_env_of(c, None));
    let image = &c.cluster.spec.image;
    Container {
        name: name.into(),
        image: Some(image.reference()),
        image_pull_policy: Some(image.pull_policy.as_str().into()),
        args: Some(args),
        env_from: Some(config_env_from(c)),
        env: Some(env),
        resources: Some(resources("10m", "32Mi", "256Mi")),
        security_context: Some(container_security(None, None, true)),
        volume_mounts: Some(vec![mount("tmp", "/tmp", false)]),
        ..Container::default()
    }
}

fn image_pull_secrets(c: &ClusterRef<'_>) -> Option<Vec<LocalObjectReference>> {
    let s = &c.cluster.spec.image.pull_secrets;
    (!s.is_empty()).then(|| {
        s.iter()
            .map(|n| LocalObjectReference { name: n.clone() })
            .collect()
    })
}

/// Pod spec shared by the migration Job and the components.
pub fn base_pod_spec(
    c: &ClusterRef<'_>,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
) -> PodSpec {
    PodSpec {
        containers,
        volumes: Some(volumes),
        security_context: Some(pod_security()),
        automount_service_account_token: Some(false),
        // Service links would inject BEEHIVE_<SERVICE>_PORT... variables for Services named
        // like `beehive-gateway`, which the services would report as unknown settings.
        enable_service_links: Some(false),
        image_pull_secrets: image_pull_secrets(c),
        ..PodSpec::default()
    }
}

/// The pod template of a component.
pub fn component_template(
    c: &ClusterRef<'_>,
    comp: Component,
    config: &ConfigMap,
    inputs: &Inputs,
) -> Result<PodTemplateSpec, BuildError> {
    let spec = &c.cluster.spec;
    let workload = comp.workload(spec);
    let image = &spec.image;

    let mut env = vec![instance_env()];
    env.extend(secret_env_of(c, Some(comp)));
    let mut mounts = vec![mount("tmp", "/tmp", false)];
    let mut volumes = vec![tmp_volume()];
    if comp.uses_jwt() {
        env.push(value_env(
            "BEEHIVE_JWT_SECRET_FILE",
            &format!("{JWT_DIR}/{}", super::secret::JWT_KEY),
        ));
        mounts.push(mount("jwt", JWT_DIR, true));
        volumes.push(Volume {
            name: "jwt".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(c.jwt_secret_name()),
                default_mode: Some(0o440),
                items: None,
                optional: Some(false),
            }),
            ..Volume::default()
        });
    }
    if comp == Component::Search && spec.search.backend == SearchBackend::Embedded {
        env.push(value_env("BEEHIVE_SEARCH_INDEX_DIR", SEARCH_INDEX_DIR));
        mounts.push(mount("index", SEARCH_INDEX_DIR, false));
    }
    if comp == Component::File && spec.file.storage.volume.is_some() {
        env.push(value_env("BEEHIVE_FILE_STORAGE_DIR", FILE_STORAGE_DIR));
        mounts.push(mount("files", FILE_STORAGE_DIR, false));
        volumes.push(Volume {
            name: "files".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: super::pvc::file_volume_name(c),
                read_only: None,
            }),
            ..Volume::default()
        });
    }

    let (port_name, readiness) = if comp.is_grpc() {
        ("grpc", grpc_probe(comp.port(), 5, 3))
    } else {
        ("http", http_probe("/readyz", comp.port(), 5, 3))
    };
    let container = Container {
        name: MAIN_CONTAINER.into(),
        image: Some(image.reference()),
        image_pull_policy: Some(image.pull_policy.as_str().into()),
        args: Some(vec!["serve".into(), comp.name().into()]),
        env_from: Some(config_env_from(c)),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some(port_name.into()),
                container_port: comp.port(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("admin".into()),
                container_port: ADMIN_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        startup_probe: Some(http_probe("/healthz", ADMIN_PORT, 2, 60)),
        liveness_probe: Some(http_probe("/healthz", ADMIN_PORT, 10, 3)),
        readiness_probe: Some(readiness),
        resources: Some(
            workload
                .resources
                .clone()
                .unwrap_or_else(|| resources("50m", "64Mi", "512Mi")),
        ),
        security_context: Some(container_security(None, None, true)),
        volume_mounts: Some(mounts),
        // A terminating gateway pod leaves the Service's endpoints while this pause runs, so
        // the load balancers stop sending new connections before SIGTERM starts the drain
        // (the reconnecting clients must land on other pods). The kubelet's own sleep:
        // the image has no shell.
        lifecycle: (comp == Component::Gateway).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: crate::crd::GATEWAY_PRESTOP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            post_start: None,
            stop_signal: None,
        }),
        ..Container::default()
    };

    let selector = c.selector_labels(comp.name());
    let mut pod_labels = selector.clone();
    pod_labels.insert(labels::PART_OF.into(), super::APP_NAME.into());
    pod_labels.insert(labels::METRICS.into(), "true".into());
    let mut annotations = workload.pod_annotations.clone();
    annotations.insert(
        CONFIG_HASH_ANNOTATION.into(),
        c.config_hash(config, inputs, Some(comp)),
    );

    let mut pod = base_pod_spec(c, vec![container], volumes);
    pod.init_containers = Some(vec![migrate_container(c, "migrate-wait", true)]);
    // A gateway drains its sockets over spec.gateway.drainSeconds after SIGTERM; the
    // kubelet must not kill it before that. The grace period starts with the preStop
    // pause, so it covers pause + drain + the gateway's own exit bound.
    pod.termination_grace_period_seconds = Some(if comp == Component::Gateway {
        crate::crd::GATEWAY_PRESTOP_SECONDS
            + c.cluster.spec.gateway.drain_seconds
            + crate::crd::GATEWAY_EXIT_GRACE_SECONDS
    } else {
        30
    });
    pod.node_selector =
        (!workload.node_selector.is_empty()).then(|| workload.node_selector.clone());
    pod.tolerations = (!workload.tolerations.is_empty()).then(|| workload.tolerations.clone());
    pod.affinity = Some(
        workload
            .affinity
            .clone()
            .unwrap_or_else(|| default_affinity(&selector)),
    );
    if !workload.topology_spread_constraints.is_empty() {
        let mut tscs = workload.topology_spread_constraints.clone();
        for t in &mut tscs {
            if t.label_selector.is_none() {
                t.label_selector = Some(LabelSelector {
                    match_labels: Some(selector.clone()),
                    match_expressions: None,
                });
            }
        }
        pod.topology_spread_constraints = Some(tscs);
    }

    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(pod),
    };
    match &workload.pod_overrides {
        None => Ok(template),
        Some(overrides) => {
            apply_overrides(template, overrides).map_err(|message| BuildError::PodOverrides {
                component: comp.name(),
                message,
            })
        }
    }
}

/// Spreads a component's pods over nodes when possible.
fn default_affinity(selector: &BTreeMap<String, String>) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector.clone()),
                            match_expressions: None,
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    }
}

/// Merges a partial pod template over the built one: objects merge key by key, lists of
/// named items (`containers`, `initContainers`, `volumes`, `env`, `ports`, `volumeMounts`)
/// merge by `name`, other lists and scalars replace, `null` deletes.
pub fn apply_overrides(
    template: PodTemplateSpec,
    overrides: &Value,
) -> Result<PodTemplateSpec, String> {
    if !overrides.is_object() {
        return Err("must be an object (a partial PodTemplateSpec)".into());
    }
    let mut base = serde_json::to_value(&template).map_err(|e| e.to_string())?;
    merge(&mut base, overrides);
    serde_json::from_value(base)
        .map_err(|e| format!("not a valid PodTemplateSpec after merging: {e}"))
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(existing) = b.get_mut(k) {
                    merge(existing, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (Value::Array(b), Value::Array(p)) if is_named_list(b) && is_named_list(p) => {
            for item in p {
                let name = item.get("name").cloned();
                match b.iter_mut().find(|x| x.get("name") == name.as_ref()) {
                    Some(existing) => merge(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn is_named_list(items: &[Value]) -> bool {
    items
        .iter()
        .all(|i| i.get("name").is_some_and(Value::is_string))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::configmap;
    use crate::reconcile::build::tests::cluster;
    use serde_json::json;

    fn template(spec: BeehiveClusterSpec, comp: Component, inputs: &Inputs) -> PodTemplateSpec {
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        let cm = configmap::build(&r);
        component_template(&r, comp, &cm, inputs).unwrap()
    }

    /// Checks a pod spec against the restricted Pod Security Standard.
    pub fn assert_restricted(pod: &PodSpec) {
        let psc = pod.security_context.as_ref().expect("pod securityContext");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
        for v in pod.volumes.iter().flatten() {
            assert!(v.host_path.is_none(), "hostPath volume {}", v.name);
        }
        for ctr in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let sc = ctr
                .security_context
                .as_ref()
                .expect("container securityContext");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", ctr.name);
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            assert!(sc.capabilities.as_ref().unwrap().add.is_none());
            assert_ne!(sc.privileged, Some(true));
            assert_ne!(sc.run_as_user, Some(0));
            for p in ctr.ports.iter().flatten() {
                assert!(p.host_port.is_none());
            }
        }
    }

    #[test]
    fn every_component_pod_is_restricted_and_probed() {
        for comp in crate::component::ALL {
            let t = template(BeehiveClusterSpec::default(), comp, &Inputs::default());
            let pod = t.spec.unwrap();
            assert_restricted(&pod);
            let ctr = &pod.containers[0];
            assert_eq!(
                ctr.args.as_ref().unwrap(),
                &vec!["serve".to_string(), comp.name().to_string()]
            );
            assert!(
                ctr.readiness_probe.is_some()
                    && ctr.liveness_probe.is_some()
                    && ctr.startup_probe.is_some()
            );
            if comp.is_grpc() {
                assert_eq!(
                    ctr.readiness_probe
                        .as_ref()
                        .unwrap()
                        .grpc
                        .as_ref()
                        .unwrap()
                        .port,
                    comp.port()
                );
            } else {
                assert_eq!(
                    ctr.readiness_probe
                        .as_ref()
                        .unwrap()
                        .http_get
                        .as_ref()
                        .unwrap()
                        .path
                        .as_deref(),
                    Some("/readyz")
                );
            }
            let init = &pod.init_containers.as_ref().unwrap()[0];
            assert_eq!(
                init.args.as_ref().unwrap(),
                &vec!["migrate".to_string(), "--wait".to_string()]
            );
            assert!(
                init.env
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|e| e.name == "BEEHIVE_DATABASE_URL")
            );
            assert_eq!(pod.enable_service_links, Some(false));
            assert_eq!(pod.automount_service_account_token, Some(false));
            assert!(
                t.metadata
                    .unwrap()
                    .annotations
                    .unwrap()
                    .contains_key(CONFIG_HASH_ANNOTATION)
            );
        }
    }

    #[test]
    fn config_hash_follows_secret_content_of_used_secrets_only() {
        let base = template(
            BeehiveClusterSpec::default(),
            Component::Social,
            &Inputs::default(),
        );
        let hash = |t: &PodTemplateSpec| {
            t.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let mut inputs = Inputs::default();
        inputs
            .secret_hashes
            .insert("demo-postgres/url".into(), "abc".into());
        let changed = template(BeehiveClusterSpec::default(), Component::Social, &inputs);
        assert_ne!(hash(&base), hash(&changed), "social reads the database URL");
        let presence_a = template(
            BeehiveClusterSpec::default(),
            Component::Presence,
            &Inputs::default(),
        );
        let presence_b = template(BeehiveClusterSpec::default(), Component::Presence, &inputs);
        assert_eq!(
            hash(&presence_a),
            hash(&presence_b),
            "presence does not read the database URL"
        );
    }

    #[test]
    fn jwt_private_key_is_mounted_into_auth_only() {
        {
            let pod = template(
                BeehiveClusterSpec::default(),
                Component::Auth,
                &Inputs::default(),
            )
            .spec
            .unwrap();
            let env = pod.containers[0].env.as_ref().unwrap();
            let file = env
                .iter()
                .find(|e| e.name == "BEEHIVE_JWT_SECRET_FILE")
                .unwrap();
            assert_eq!(
                file.value.as_deref(),
                Some("/etc/beehive/jwt/signing-key.pem")
            );
            let vol = pod
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == "jwt")
                .unwrap();
            assert_eq!(
                vol.secret.as_ref().unwrap().secret_name.as_deref(),
                Some("demo-jwt")
            );
        }
        let pod = template(
            BeehiveClusterSpec::default(),
            Component::User,
            &Inputs::default(),
        )
        .spec
        .unwrap();
        assert!(!pod.volumes.unwrap().iter().any(|v| v.name == "jwt"));
    }

    #[test]
    fn scheduling_settings_are_passed_through() {
        let mut spec = BeehiveClusterSpec::default();
        spec.message
            .node_selector
            .insert("pool".into(), "chat".into());
        spec.message
            .tolerations
            .push(k8s_openapi::api::core::v1::Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("chat".into()),
                effect: Some("NoSchedule".into()),
                toleration_seconds: None,
            });
        spec.message.topology_spread_constraints.push(
            k8s_openapi::api::core::v1::TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "topology.kubernetes.io/zone".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                ..Default::default()
            },
        );
        let pod = template(spec, Component::Message, &Inputs::default())
            .spec
            .unwrap();
        assert_eq!(pod.node_selector.unwrap()["pool"], "chat");
        assert_eq!(pod.tolerations.unwrap().len(), 1);
        let tsc = &pod.topology_spread_constraints.unwrap()[0];
        assert_eq!(
            tsc.label_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[labels::COMPONENT],
            "message"
        );
        assert!(pod.affinity.unwrap().pod_anti_affinity.is_some());
    }

    #[test]
    fn pod_overrides_merge_by_name() {
        let mut spec = BeehiveClusterSpec::default();
        spec.gateway.workload.pod_overrides = Some(json!({
            "metadata": {"labels": {"team": "chat"}},
            "spec": {
                "priorityClassName": "high",
                "containers": [{"name": "beehive", "env": [{"name": "RUST_BACKTRACE", "value": "1"}]},
                               {"name": "sidecar", "image": "busybox"}]
            }
        }));
        let t = template(spec, Component::Gateway, &Inputs::default());
        assert_eq!(
            t.metadata.as_ref().unwrap().labels.as_ref().unwrap()["team"],
            "chat"
        );
        let pod = t.spec.unwrap();
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        assert_eq!(pod.containers.len(), 2);
        let env = pod.containers[0].env.as_ref().unwrap();
        assert!(env.iter().any(|e| e.name == "RUST_BACKTRACE"));
        assert!(
            env.iter().any(|e| e.name == "BEEHIVE_INSTANCE_ID"),
            "built env is kept"
        );
        assert_eq!(pod.containers[0].args.as_ref().unwrap()[1], "gateway");
    }

    #[test]
    fn bad_pod_overrides_are_reported() {
        let mut spec = BeehiveClusterSpec::default();
        spec.gateway.workload.pod_overrides = Some(json!({"spec": {"containers": "nope"}}));
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        let err = component_template(
            &r,
            Component::Gateway,
            &configmap::build(&r),
            &Inputs::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("spec.gateway.podOverrides"),
            "{err}"
        );
    }
}
