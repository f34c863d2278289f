//! Desired state: pure functions from a `BeehiveCluster` (and a few facts read from the
//! cluster, [`Inputs`]) to the child objects the operator applies. No client in here.
//!
//! One file per child kind; [`build_all`] puts them together in apply order.

pub mod configmap;
pub mod datastore;
pub mod hpa;
pub mod ingress;
pub mod job;
pub mod monitoring;
pub mod network_policy;
pub mod operated;
pub mod pdb;
pub mod pod;
pub mod pvc;
pub mod secret;
pub mod service;
pub mod service_monitor;
pub mod workload;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ApiResource, DynamicObject};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::component::Component;
use crate::crd::{BeehiveCluster, DatastoreMode, SecretKeyRef};

pub use datastore::Datastore;

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "beehive-operator";
/// Label values.
pub const APP_NAME: &str = "beehive";
/// `app.kubernetes.io/managed-by` value; with the instance label it selects our children.
pub const MANAGED_BY: &str = "beehive-operator";
/// Annotation on each child: hash of what the operator last applied.
pub const SPEC_HASH_ANNOTATION: &str = "beehive.dev/spec-hash";
/// Pod template annotation: hash of the configuration and Secret content the pods use, so
/// they roll when it changes.
pub const CONFIG_HASH_ANNOTATION: &str = "beehive.dev/config-hash";

/// Label keys.
pub mod labels {
    /// `app.kubernetes.io/name`
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/instance`
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `app.kubernetes.io/component`
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// `app.kubernetes.io/part-of`
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// `app.kubernetes.io/managed-by`
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// `app.kubernetes.io/version`
    pub const VERSION: &str = "app.kubernetes.io/version";
    /// Marks pods that serve /metrics on the admin port.
    pub const METRICS: &str = "beehive.dev/metrics";
}

/// Errors of the pure builders: a spec the operator cannot turn into objects.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The object has no namespace or uid yet (not read from the API server).
    #[error("BeehiveCluster has no {0}")]
    MissingMetadata(&'static str),
    /// A spec.*.podOverrides could not be merged.
    #[error("spec.{component}.podOverrides: {message}")]
    PodOverrides {
        /// The component.
        component: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The JWT key could not be encoded.
    #[error("encoding the JWT signing key: {0}")]
    Key(String),
    /// An object could not be serialized.
    #[error("serializing {0}: {1}")]
    Serialize(String, serde_json::Error),
}

/// Who provides a Secret the pods read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretSource {
    /// The user (external datastores, SMTP, S3, a named JWT Secret): required.
    User,
    /// This operator, when absent (JWT key, managed datastore credentials).
    Generated,
    /// The operator of a datastore (CloudNativePG, RabbitMQ, ECK), once its cluster is up:
    /// awaited, not required; pods referencing it start when it exists.
    DatastoreOperator,
}

/// Facts read from the cluster that the desired state depends on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// SHA-256 (hex) of each referenced Secret key's value, by `name/key`. Feeds the config
    /// hash so pods roll when a Secret's content changes.
    pub secret_hashes: BTreeMap<String, String>,
    /// The namespace the operator runs in (its pods are admitted to the search
    /// component's gRPC port by the NetworkPolicy, for reindex requests).
    pub operator_namespace: Option<String>,
}

impl Inputs {
    fn hash_of(&self, r: &SecretKeyRef) -> &str {
        self.secret_hashes
            .get(&format!("{}/{}", r.name, r.key))
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// The kinds of object the operator creates for a cluster (and so may find and delete).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    /// Configuration of the components.
    ConfigMap,
    /// Storage of the managed datastores and the file component.
    PersistentVolumeClaim,
    /// Where components and clients reach each other.
    Service,
    /// The database migration.
    Job,
    /// The Beehive components.
    Deployment,
    /// The managed datastores.
    StatefulSet,
    /// Disruption budgets of the components.
    PodDisruptionBudget,
    /// Autoscalers of the components that have `autoscaling`.
    HorizontalPodAutoscaler,
    /// Optional network isolation.
    NetworkPolicy,
    /// Optional external access to the gateway.
    Ingress,
    /// Optional Prometheus Operator scrape config; its CRD may be absent.
    ServiceMonitor,
    /// Optional Prometheus Operator alerting rules; its CRD may be absent.
    PrometheusRule,
    /// PostgreSQL run by CloudNativePG (`postgresql.cnpg.io/v1` `Cluster`).
    PostgresCluster,
    /// RabbitMQ run by the RabbitMQ Cluster Operator (`rabbitmq.com/v1beta1`).
    RabbitmqCluster,
    /// Elasticsearch run by ECK (`elasticsearch.k8s.elastic.co/v1`).
    Elasticsearch,
}

impl ChildKind {
    /// Every kind, in the order children are listed.
    pub const ALL: [ChildKind; 15] = [
        ChildKind::ConfigMap,
        ChildKind::PersistentVolumeClaim,
        ChildKind::Service,
        ChildKind::Job,
        ChildKind::Deployment,
        ChildKind::StatefulSet,
        ChildKind::PodDisruptionBudget,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::NetworkPolicy,
        ChildKind::Ingress,
        ChildKind::ServiceMonitor,
        ChildKind::PrometheusRule,
        ChildKind::PostgresCluster,
        ChildKind::RabbitmqCluster,
        ChildKind::Elasticsearch,
    ];

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::ConfigMap => "ConfigMap",
            ChildKind::PersistentVolumeClaim => "PersistentVolumeClaim",
            ChildKind::Service => "Service",
            ChildKind::Job => "Job",
            ChildKind::Deployment => "Deployment",
            ChildKind::StatefulSet => "StatefulSet",
            ChildKind::PodDisruptionBudget => "PodDisruptionBudget",
            ChildKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            ChildKind::NetworkPolicy => "NetworkPolicy",
            ChildKind::Ingress => "Ingress",
            ChildKind::ServiceMonitor => "ServiceMonitor",
            ChildKind::PrometheusRule => "PrometheusRule",
            ChildKind::PostgresCluster => "Cluster",
            ChildKind::RabbitmqCluster => "RabbitmqCluster",
            ChildKind::Elasticsearch => "Elasticsearch",
        }
    }

    /// Group, version and plural, for the dynamic API.
    pub fn api_resource(self) -> ApiResource {
        use k8s_openapi::api::{apps, autoscaling, batch, core, networking, policy};
        match self {
            ChildKind::ConfigMap => ApiResource::erase::<core::v1::ConfigMap>(&()),
            ChildKind::PersistentVolumeClaim => {
                ApiResource::erase::<core::v1::PersistentVolumeClaim>(&())
            }
            ChildKind::Service => ApiResource::erase::<core::v1::Service>(&()),
            ChildKind::Job => ApiResource::erase::<batch::v1::Job>(&()),
            ChildKind::Deployment => ApiResource::erase::<apps::v1::Deployment>(&()),
            ChildKind::StatefulSet => ApiResource::erase::<apps::v1::StatefulSet>(&()),
            ChildKind::PodDisruptionBudget => {
                ApiResource::erase::<policy::v1::PodDisruptionBudget>(&())
            }
            ChildKind::HorizontalPodAutoscaler => {
                ApiResource::erase::<autoscaling::v2::HorizontalPodAutoscaler>(&())
            }
            ChildKind::NetworkPolicy => ApiResource::erase::<networking::v1::NetworkPolicy>(&()),
            ChildKind::Ingress => ApiResource::erase::<networking::v1::Ingress>(&()),
            ChildKind::ServiceMonitor => service_monitor::api_resource(),
            ChildKind::PrometheusRule => monitoring::prometheus_rule_resource(),
            ChildKind::PostgresCluster => operated::cnpg_cluster_resource(),
            ChildKind::RabbitmqCluster => operated::rabbitmq_cluster_resource(),
            ChildKind::Elasticsearch => operated::elasticsearch_resource(),
        }
    }

    /// Whether the API server may not serve this kind (a CRD installed with another
    /// operator), in which case the cluster has none and the status says what is missing.
    pub fn optional(self) -> bool {
        matches!(
            self,
            ChildKind::ServiceMonitor
                | ChildKind::PrometheusRule
                | ChildKind::PostgresCluster
                | ChildKind::RabbitmqCluster
                | ChildKind::Elasticsearch
        )
    }

    /// A datastore run by another operator: listed only while desired and never pruned, so
    /// changing spec.<datastore>.mode never deletes a database (it goes with the
    /// BeehiveCluster, which owns it).
    pub fn is_datastore(self) -> bool {
        matches!(
            self,
            ChildKind::PostgresCluster | ChildKind::RabbitmqCluster | ChildKind::Elasticsearch
        )
    }

    /// What to do when the API server does not serve this kind.
    pub fn missing_hint(self) -> &'static str {
        match self {
            ChildKind::ServiceMonitor | ChildKind::PrometheusRule => {
                "install the Prometheus Operator CRDs or turn the option off in spec.monitoring"
            }
            ChildKind::PostgresCluster => {
                "install CloudNativePG (https://cloudnative-pg.io) or set spec.postgres.mode to managed or external"
            }
            ChildKind::RabbitmqCluster => {
                "install the RabbitMQ Cluster Operator or set spec.rabbitmq.mode to managed or external"
            }
            ChildKind::Elasticsearch => {
                "install ECK (Elastic Cloud on Kubernetes) or set spec.elasticsearch.mode to managed or external"
            }
            _ => "a built-in kind should always be served",
        }
    }
}

impl std::fmt::Display for ChildKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed Kubernetes object the builders produce, and the [`ChildKind`] it is.
pub trait Child: kube::Resource<DynamicType = ()> + Serialize {
    /// Its kind.
    const KIND: ChildKind;
}

macro_rules! child_kinds {
    ($($ty:ty => $kind:ident),* $(,)?) => {
        $(impl Child for $ty { const KIND: ChildKind = ChildKind::$kind; })*
    };
}

child_kinds! {
    k8s_openapi::api::core::v1::ConfigMap => ConfigMap,
    k8s_openapi::api::core::v1::PersistentVolumeClaim => PersistentVolumeClaim,
    k8s_openapi::api::core::v1::Service => Service,
    k8s_openapi::api::batch::v1::Job => Job,
    k8s_openapi::api::apps::v1::Deployment => Deployment,
    k8s_openapi::api::apps::v1::StatefulSet => StatefulSet,
    k8s_openapi::api::policy::v1::PodDisruptionBudget => PodDisruptionBudget,
    k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler => HorizontalPodAutoscaler,
    k8s_openapi::api::networking::v1::NetworkPolicy => NetworkPolicy,
    k8s_openapi::api::networking::v1::Ingress => Ingress,
}

/// One object to apply.
#[derive(Clone, Debug)]
pub struct DesiredObject {
    /// Its kind.
    pub kind: ChildKind,
    /// The object, with the spec-hash annotation set.
    pub object: DynamicObject,
}

impl DesiredObject {
    /// Name of the object.
    pub fn name(&self) -> String {
        self.object.name_any()
    }

    /// `Kind/name`, for logs and tests.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name())
    }

    /// The object as a typed resource (tests).
    pub fn parse<K: kube::Resource + serde::de::DeserializeOwned>(&self) -> Option<K> {
        serde_json::to_value(&self.object)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
    }

    /// The spec-hash annotation.
    pub fn spec_hash(&self) -> Option<&str> {
        self.object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SPEC_HASH_ANNOTATION))
            .map(String::as_str)
    }
}

/// Everything the operator wants to exist for a cluster.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Objects to server-side apply, in order.
    pub objects: Vec<DesiredObject>,
}

impl Desired {
    /// Finds an object by kind and name.
    pub fn get(&self, kind: ChildKind, name: &str) -> Option<&DesiredObject> {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.name() == name)
    }

    /// `Kind/name` of every object.
    pub fn keys(&self) -> Vec<String> {
        self.objects.iter().map(DesiredObject::key).collect()
    }

    fn push<K: Child>(&mut self, obj: &K) -> Result<(), BuildError> {
        self.objects.push(to_desired(K::KIND, obj)?);
        Ok(())
    }
}

/// Turns a typed object into a [`DesiredObject`], stamping the spec hash.
pub fn to_desired<K: Serialize>(kind: ChildKind, obj: &K) -> Result<DesiredObject, BuildError> {
    let resource = kind.api_resource();
    let value =
        serde_json::to_value(obj).map_err(|e| BuildError::Serialize(resource.kind.clone(), e))?;
    let hash = sha256_hex(value.to_string().as_bytes());
    let mut object: DynamicObject = serde_json::from_value(value)
        .map_err(|e| BuildError::Serialize(resource.kind.clone(), e))?;
    object.types = Some(kube::core::TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    object
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SPEC_HASH_ANNOTATION.into(), hash[..16].to_string());
    Ok(DesiredObject { kind, object })
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Namespace, name and owner reference of a cluster read from the API server.
#[derive(Clone, Debug)]
pub struct ClusterRef<'a> {
    /// The cluster.
    pub cluster: &'a BeehiveCluster,
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Controller owner reference pointing at it.
    pub owner: OwnerReference,
}

impl<'a> ClusterRef<'a> {
    /// Checks the metadata the builders need.
    pub fn new(cluster: &'a BeehiveCluster) -> Result<Self, BuildError> {
        let namespace = cluster
            .namespace()
            .ok_or(BuildError::MissingMetadata("namespace"))?;
        let owner = cluster
            .controller_owner_ref(&())
            .ok_or(BuildError::MissingMetadata("uid"))?;
        Ok(Self {
            cluster,
            name: cluster.name_any(),
            namespace,
            owner,
        })
    }

    /// `<cluster>-<suffix>`.
    pub fn child_name(&self, suffix: &str) -> String {
        format!("{}-{}", self.name, suffix)
    }

    /// The installation prefix (spec.installation or the cluster name).
    pub fn installation(&self) -> String {
        self.cluster
            .spec
            .installation
            .clone()
            .unwrap_or_else(|| self.name.clone())
    }

    /// Labels selecting a component's pods (stable: used in selectors).
    pub fn selector_labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (labels::NAME.into(), APP_NAME.into()),
            (labels::INSTANCE.into(), self.name.clone()),
            (labels::COMPONENT.into(), component.into()),
        ])
    }

    /// Labels of every child (selector labels plus part-of, managed-by, version).
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut l = self.selector_labels(component);
        l.insert(labels::PART_OF.into(), APP_NAME.into());
        l.insert(labels::MANAGED_BY.into(), MANAGED_BY.into());
        l.insert(
            labels::VERSION.into(),
            label_value(&self.cluster.spec.image.tag),
        );
        l
    }

    /// Metadata of a child object.
    pub fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// Where the URL of a datastore is: the generated Secret when managed, the referenced
    /// one when external, CloudNativePG's application Secret (`uri`) for PostgreSQL run by
    /// it. RabbitMQ and Elasticsearch run by their operators have no URL in a Secret: see
    /// [`ClusterRef::datastore_env`].
    pub fn datastore_url(&self, ds: Datastore) -> SecretKeyRef {
        let spec = ds.spec(&self.cluster.spec);
        match (spec.map(|s| s.mode), spec.and_then(|s| s.external.as_ref())) {
            (Some(DatastoreMode::External), Some(ext)) => ext.secret_ref.clone(),
            (Some(DatastoreMode::CloudNativePg), _) if ds == Datastore::Postgres => {
                operated::secret_refs(self, ds).remove(0)
            }
            _ => SecretKeyRef {
                name: self.child_name(ds.name()),
                key: "url".into(),
            },
        }
    }

    /// The environment variables giving a pod a datastore's URL (its Secret-backed
    /// variable, or the variables the URL is composed from).
    pub fn datastore_env(&self, ds: Datastore) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
        let mode = ds.spec(&self.cluster.spec).map(|s| s.mode);
        match mode {
            Some(m) if operated::kind_for(ds, m).is_some() => operated::env(self, ds),
            _ => vec![pod::secret_env(ds.env_var(), &self.datastore_url(ds))],
        }
    }

    /// The JWT Secret's name.
    pub fn jwt_secret_name(&self) -> String {
        self.cluster
            .spec
            .jwt
            .secret_name
            .clone()
            .unwrap_or_else(|| self.child_name("jwt"))
    }

    /// Datastores in use (Elasticsearch only with the elasticsearch search backend).
    pub fn datastores(&self) -> Vec<Datastore> {
        Datastore::ALL
            .into_iter()
            .filter(|ds| ds.in_use(&self.cluster.spec))
            .collect()
    }

    /// Datastores the operator runs.
    pub fn managed_datastores(&self) -> Vec<Datastore> {
        self.datastores()
            .into_iter()
            .filter(|ds| {
                ds.spec(&self.cluster.spec)
                    .is_some_and(|s| s.mode == DatastoreMode::Managed)
            })
            .collect()
    }

    /// Every Secret key the pods read, with who provides it.
    pub fn secret_refs(&self) -> Vec<(SecretKeyRef, SecretSource)> {
        let spec = &self.cluster.spec;
        let mut refs: Vec<(SecretKeyRef, SecretSource)> = Vec::new();
        let jwt_source = if spec.jwt.secret_name.is_none() {
            SecretSource::Generated
        } else {
            SecretSource::User
        };
        refs.push((
            SecretKeyRef {
                name: self.jwt_secret_name(),
                key: secret::JWT_KEY.into(),
            },
            jwt_source,
        ));
        for ds in self.datastores() {
            let mode = ds.spec(spec).map(|s| s.mode).unwrap_or_default();
            match mode {
                DatastoreMode::Managed => {
                    refs.push((self.datastore_url(ds), SecretSource::Generated))
                }
                DatastoreMode::External => refs.push((self.datastore_url(ds), SecretSource::User)),
                m if operated::kind_for(ds, m).is_some() => {
                    for r in operated::secret_refs(self, ds) {
                        refs.push((r, SecretSource::DatastoreOperator));
                    }
                }
                _ => refs.push((self.datastore_url(ds), SecretSource::User)),
            }
        }
        if let Some(smtp) = &spec.auth.smtp {
            refs.push((smtp.secret_ref.clone(), SecretSource::User));
        }
        if let Some(s3) = &spec.file.storage.s3 {
            refs.push((s3.clone(), SecretSource::User));
        }
        refs
    }

    /// The config hash of a component's pods: ConfigMap content plus the content of every
    /// Secret key the component reads.
    pub fn config_hash(
        &self,
        config: &ConfigMap,
        inputs: &Inputs,
        component: Option<Component>,
    ) -> String {
        let mut h = Sha256::new();
        if let Some(data) = &config.data {
            for (k, v) in data {
                h.update(k.as_bytes());
                h.update(b"=");
                h.update(v.as_bytes());
                h.update(b"\n");
            }
        }
        for r in pod::secret_refs_of(self, component) {
            h.update(r.name.as_bytes());
            h.update(b"/");
            h.update(r.key.as_bytes());
            h.update(b"=");
            h.update(inputs.hash_of(&r).as_bytes());
            h.update(b"\n");
        }
        let digest = h.finalize();
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// Makes a string a valid label value (at most 63 characters of `[A-Za-z0-9._-]`, starting
/// and ending alphanumeric).
pub fn label_value(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Builds every child object of a cluster, in apply order.
pub fn build_all(cluster: &BeehiveCluster, inputs: &Inputs) -> Result<Desired, BuildError> {
    let c = ClusterRef::new(cluster)?;
    let spec = &cluster.spec;
    let mut desired = Desired::default();

    let config = configmap::build(&c);
    desired.push(&config)?;

    if let Some(pvc) = pvc::file_volume(&c) {
        desired.push::<PersistentVolumeClaim>(&pvc)?;
    }

    // Managed infrastructure first, so it starts while the rest is created.
    for ds in c.managed_datastores() {
        desired.push::<Service>(&datastore::service(&c, ds))?;
        desired.push(&datastore::stateful_set(&c, ds))?;
    }
    // Datastores other operators run, likewise first.
    for (ds, kind) in operated::operated(&c) {
        if let Some(obj) = operated::build(&c, ds) {
            desired.objects.push(to_desired(kind, &obj)?);
        }
    }

    for comp in crate::component::ALL {
        desired.push::<Service>(&service::component(&c, comp))?;
    }
    desired.push::<Service>(&service::metrics(&c))?;

    desired.push(&job::migration(&c, &config, inputs)?)?;

    for comp in crate::component::ALL {
        match workload::build(&c, comp, &config, inputs)? {
            workload::Workload::Deployment(d) => desired.push(&d)?,
            workload::Workload::StatefulSet(s) => desired.push(&s)?,
        }
    }

    for comp in crate::component::ALL {
        if let Some(pdb) = pdb::build(&c, comp) {
            desired.push(&pdb)?;
        }
        if let Some(hpa) = hpa::build(&c, comp) {
            desired.push(&hpa)?;
        }
    }

    if spec.network_policy.enabled {
        for np in network_policy::build(&c, inputs.operator_namespace.as_deref()) {
            desired.push(&np)?;
        }
    }

    if let Some(ing) = ingress::build(&c) {
        desired.push(&ing)?;
    }

    if let Some(sm) = service_monitor::build(&c) {
        desired
            .objects
            .push(to_desired(ChildKind::ServiceMonitor, &sm)?);
    }
    if let Some(rule) = monitoring::prometheus_rule(&c)? {
        desired
            .objects
            .push(to_desired(ChildKind::PrometheusRule, &rule)?);
    }
    if let Some(dashboard) = monitoring::dashboard(&c) {
        desired.push(&dashboard)?;
    }

    Ok(desired)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;

    /// A cluster as read from the API server.
    pub fn cluster(name: &str, spec: BeehiveClusterSpec) -> BeehiveCluster {
        let mut c = BeehiveCluster::new(name, spec);
        c.metadata.namespace = Some("chat".into());
        c.metadata.uid = Some("uid-1".into());
        c.metadata.generation = Some(1);
        c
    }

    #[test]
    fn default_cluster_builds_expected_objects_in_order() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let d = build_all(&c, &Inputs::default()).unwrap();
        let keys = d.keys();
        let expected_prefix = [
            "ConfigMap/demo-config",
            "PersistentVolumeClaim/demo-files",
            "Service/demo-postgres",
            "StatefulSet/demo-postgres",
            "Service/demo-redis",
            "StatefulSet/demo-redis",
            "Service/demo-rabbitmq",
            "StatefulSet/demo-rabbitmq",
            "Service/demo-gateway",
            "Service/demo-auth",
        ];
        assert_eq!(&keys[..expected_prefix.len()], &expected_prefix);
        assert!(keys.iter().any(|k| k.starts_with("Job/demo-migrate-")));
        assert!(
            keys.contains(&"StatefulSet/demo-search".to_string()),
            "{keys:?}"
        );
        assert!(keys.contains(&"Deployment/demo-gateway".to_string()));
        assert!(
            !keys.iter().any(|k| k.starts_with("PodDisruptionBudget/")),
            "single replicas get no PDB"
        );
        assert!(!keys.iter().any(|k| k.contains("elasticsearch")));
        for o in &d.objects {
            let owners = o.object.metadata.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1, "{}", o.key());
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(owners[0].kind, "BeehiveCluster");
            let labels = o.object.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[labels::MANAGED_BY], MANAGED_BY);
            assert_eq!(labels[labels::INSTANCE], "demo");
            assert!(o.spec_hash().is_some());
            assert!(o.name().len() <= 63, "{}", o.key());
        }
    }

    #[test]
    fn every_pod_of_every_shape_is_restricted() {
        use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
        use k8s_openapi::api::batch::v1::Job;
        let mut es = BeehiveClusterSpec::default();
        es.search.backend = crate::crd::SearchBackend::Elasticsearch;
        es.elasticsearch = Some(crate::crd::DatastoreSpec::default());
        for spec in [BeehiveClusterSpec::default(), es] {
            let d = build_all(&cluster("demo", spec), &Inputs::default()).unwrap();
            let mut pods = 0;
            for o in &d.objects {
                let pod = match o.kind {
                    ChildKind::Deployment => {
                        o.parse::<Deployment>().unwrap().spec.unwrap().template.spec
                    }
                    ChildKind::StatefulSet => {
                        o.parse::<StatefulSet>()
                            .unwrap()
                            .spec
                            .unwrap()
                            .template
                            .spec
                    }
                    ChildKind::Job => o.parse::<Job>().unwrap().spec.unwrap().template.spec,
                    _ => continue,
                };
                pod::tests::assert_restricted(&pod.unwrap());
                pods += 1;
            }
            assert!(pods >= 12, "{pods}");
        }
    }

    #[test]
    fn spec_hash_is_stable_and_changes_with_spec() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let a = build_all(&c, &Inputs::default()).unwrap();
        let b = build_all(&c, &Inputs::default()).unwrap();
        assert_eq!(
            a.objects
                .iter()
                .map(|o| o.spec_hash().unwrap().to_string())
                .collect::<Vec<_>>(),
            b.objects
                .iter()
                .map(|o| o.spec_hash().unwrap().to_string())
                .collect::<Vec<_>>()
        );
        let mut spec = BeehiveClusterSpec::default();
        spec.gateway.workload.replicas = 3;
        let c2 = cluster("demo", spec);
        let changed = build_all(&c2, &Inputs::default()).unwrap();
        let gw = |d: &Desired| {
            d.get(ChildKind::Deployment, "demo-gateway")
                .unwrap()
                .spec_hash()
                .unwrap()
                .to_string()
        };
        assert_ne!(gw(&a), gw(&changed));
        let auth = |d: &Desired| {
            d.get(ChildKind::Deployment, "demo-auth")
                .unwrap()
                .spec_hash()
                .unwrap()
                .to_string()
        };
        assert_eq!(auth(&a), auth(&changed));
    }

    #[test]
    fn missing_metadata_is_an_error() {
        let c = BeehiveCluster::new("x", BeehiveClusterSpec::default());
        assert!(matches!(
            build_all(&c, &Inputs::default()),
            Err(BuildError::MissingMetadata(_))
        ));
    }

    #[test]
    fn label_values_are_sanitized() {
        assert_eq!(label_value("1.2.3"), "1.2.3");
        assert_eq!(label_value("sha256:abc"), "sha256_abc");
        assert_eq!(label_value(&"a".repeat(100)).len(), 63);
        assert_eq!(label_value("-x-"), "x");
    }

    #[test]
    fn the_gateway_gets_its_drain_window_and_a_grace_period_beyond_it() {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::ConfigMap;
        for (drain, grace) in [(None, 50), (Some(120), 140), (Some(0), 20)] {
            let mut spec = BeehiveClusterSpec::default();
            if let Some(d) = drain {
                spec.gateway.drain_seconds = d;
            }
            let d = build_all(&cluster("demo", spec), &Inputs::default()).unwrap();
            let pod = |name: &str| {
                d.get(ChildKind::Deployment, name)
                    .unwrap()
                    .parse::<Deployment>()
                    .unwrap()
                    .spec
                    .unwrap()
                    .template
                    .spec
                    .unwrap()
            };
            assert_eq!(
                pod("demo-gateway").termination_grace_period_seconds,
                Some(grace)
            );
            assert_eq!(pod("demo-auth").termination_grace_period_seconds, Some(30));
            let gateway = pod("demo-gateway");
            let pre_stop = gateway.containers[0]
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.sleep.as_ref())
                .map(|s| s.seconds);
            assert_eq!(pre_stop, Some(crate::crd::GATEWAY_PRESTOP_SECONDS));
            assert!(
                pre_stop.unwrap() + drain.unwrap_or(30) < grace,
                "the pause and the drain fit in the grace period"
            );
            assert!(pod("demo-auth").containers[0].lifecycle.is_none());
            let config = d
                .get(ChildKind::ConfigMap, "demo-config")
                .unwrap()
                .parse::<ConfigMap>()
                .unwrap()
                .data
                .unwrap();
            assert_eq!(
                config["BEEHIVE_GATEWAY_DRAIN_WINDOW"],
                format!("{}s", drain.unwrap_or(30))
            );
        }
    }
}
