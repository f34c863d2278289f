//! Validation of a spec before anything is built. The CRD's CEL rules reject most of these
//! at admission; this repeats them (API servers can be old, rules can be bypassed by a
//! stored object written before a rule existed) and adds what CEL cannot express.

use crate::component::ComponentExt as _;
use kube::ResourceExt;
use kube::api::DynamicObject;

use crate::crd::{
    BeehiveCluster, DatastoreMode, MAX_NAME_LEN, SearchBackend, ServiceType, VolumeAccessMode,
};
use crate::reconcile::build::Datastore;

/// Parses an object read from the API server into a `BeehiveCluster`. A malformed object
/// is reported on its status instead of breaking the watch.
pub fn parse(obj: &DynamicObject) -> Result<BeehiveCluster, String> {
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_json::from_value::<BeehiveCluster>(value)
        .map_err(|e| format!("cannot read the object: {e}"))
}

/// Problems of a spec, each a sentence naming the field; empty when valid.
pub fn validate(cluster: &BeehiveCluster) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = &cluster.spec;
    let name = cluster.name_any();
    if name.len() > MAX_NAME_LEN {
        problems.push(format!(
            "metadata.name is {} characters; at most {MAX_NAME_LEN} keep the names of the created objects valid",
            name.len()
        ));
    }
    if spec.search.backend == SearchBackend::Elasticsearch && spec.elasticsearch.is_none() {
        problems.push(
            "spec.elasticsearch is required when spec.search.backend is elasticsearch".into(),
        );
    }
    if spec.search.backend == SearchBackend::Embedded && spec.search.workload.replicas > 1 {
        problems
            .push("spec.search.replicas must be 0 or 1 with the embedded search backend".into());
    }
    if spec.search.backend == SearchBackend::Embedded && spec.search.workload.autoscaling.is_some()
    {
        problems.push("spec.search.autoscaling needs the elasticsearch search backend".into());
    }
    match (&spec.file.storage.volume, &spec.file.storage.s3) {
        (Some(_), Some(_)) | (None, None) => problems
            .push("set exactly one of spec.file.storage.volume and spec.file.storage.s3".into()),
        (Some(v), None)
            if v.access_mode == VolumeAccessMode::ReadWriteOnce
                && (spec.file.workload.replicas > 1
                    || spec
                        .file
                        .workload
                        .autoscaling
                        .as_ref()
                        .is_some_and(|a| a.max_replicas > 1)) =>
        {
            problems
                .push("spec.file.replicas > 1 needs a ReadWriteMany volume or s3 storage".into())
        }
        _ => {}
    }
    for ds in Datastore::ALL {
        let Some(d) = ds.spec(spec) else { continue };
        if d.mode == DatastoreMode::External && d.external.is_none() {
            problems.push(format!(
                "spec.{}.external.secretRef is required in external mode",
                ds.name()
            ));
        }
        if d.mode.is_operator() && crate::reconcile::build::operated::kind_for(ds, d.mode).is_none()
        {
            problems.push(format!(
                "spec.{}.mode {} does not apply to {}",
                ds.name(),
                d.mode.as_str(),
                ds.name()
            ));
        }
        for (section, set, mode) in [
            (
                "cloudnativepg",
                d.cloudnativepg.is_some(),
                DatastoreMode::CloudNativePg,
            ),
            (
                "rabbitmqOperator",
                d.rabbitmq_operator.is_some(),
                DatastoreMode::RabbitmqOperator,
            ),
            ("eck", d.eck.is_some(), DatastoreMode::Eck),
        ] {
            if set && crate::reconcile::build::operated::kind_for(ds, mode).is_none() {
                problems.push(format!(
                    "spec.{}.{section} does not apply to {}",
                    ds.name(),
                    ds.name()
                ));
            }
        }
    }
    let svc = &spec.gateway.service;
    if svc.node_port.is_some() && svc.type_ == ServiceType::ClusterIP {
        problems.push("spec.gateway.service.nodePort needs type NodePort or LoadBalancer".into());
    }
    for comp in crate::component::ALL {
        let w = comp.workload(spec);
        if let Some(auto) = &w.autoscaling
            && auto.min_replicas > auto.max_replicas
        {
            problems.push(format!(
                "spec.{}.autoscaling.minReplicas must not exceed maxReplicas",
                comp.name()
            ));
        }
        if w.replicas < 0 {
            problems.push(format!(
                "spec.{}.replicas must not be negative",
                comp.name()
            ));
        }
        if let Some(o) = &w.pod_overrides
            && !o.is_object()
        {
            problems.push(format!(
                "spec.{}.podOverrides must be an object",
                comp.name()
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BeehiveClusterSpec, DatastoreSpec};
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn default_spec_is_valid() {
        assert!(validate(&cluster("demo", BeehiveClusterSpec::default())).is_empty());
    }

    #[test]
    fn mistakes_are_named() {
        let mut spec = BeehiveClusterSpec::default();
        spec.search.backend = SearchBackend::Elasticsearch;
        spec.file.workload.replicas = 2;
        spec.redis = DatastoreSpec {
            mode: DatastoreMode::External,
            ..DatastoreSpec::default()
        };
        spec.gateway.service.node_port = Some(30080);
        let p = validate(&cluster(&"x".repeat(40), spec));
        let all = p.join("\n");
        assert!(all.contains("metadata.name"), "{all}");
        assert!(all.contains("spec.elasticsearch"), "{all}");
        assert!(all.contains("spec.file.replicas"), "{all}");
        assert!(all.contains("spec.redis.external"), "{all}");
        assert!(all.contains("nodePort"), "{all}");
    }

    #[test]
    fn operator_modes_only_where_they_apply() {
        let spec: crate::crd::BeehiveClusterSpec = serde_json::from_value(serde_json::json!({
            "postgres": {"mode": "rabbitmq-operator"},
            "redis": {"mode": "cloudnativepg"},
            "rabbitmq": {"mode": "rabbitmq-operator", "eck": {}},
        }))
        .unwrap();
        let all = validate(&cluster("demo", spec)).join("\n");
        assert!(
            all.contains("spec.postgres.mode rabbitmq-operator"),
            "{all}"
        );
        assert!(all.contains("spec.redis.mode cloudnativepg"), "{all}");
        assert!(all.contains("spec.rabbitmq.eck"), "{all}");
        let ok: crate::crd::BeehiveClusterSpec = serde_json::from_value(serde_json::json!({
            "postgres": {"mode": "cloudnativepg"},
            "rabbitmq": {"mode": "rabbitmq-operator"},
            "search": {"backend": "elasticsearch", "replicas": 2},
            "elasticsearch": {"mode": "eck"},
        }))
        .unwrap();
        assert!(validate(&cluster("demo", ok)).is_empty());
    }

    #[test]
    fn malformed_objects_are_reported_not_panicked() {
        let mut obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "beehive.dev/v1alpha1", "kind": "BeehiveCluster",
            "metadata": {"name": "x", "namespace": "n"},
            "spec": {"gateway": {"replicas": "many"}}
        }))
        .unwrap();
        let err = parse(&obj).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
        obj.data = serde_json::json!({"spec": {}});
        assert!(parse(&obj).is_ok());
    }
}
