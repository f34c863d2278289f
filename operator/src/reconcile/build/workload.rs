//! Deployments of the components, and a StatefulSet for search with the embedded index (its
//! state is local to the pod).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod::component_template;
use super::{BuildError, ClusterRef, Inputs};
use crate::component::Component;
use crate::component::ComponentExt as _;
use crate::crd::{SearchBackend, VolumeAccessMode};

/// A component's workload.
#[derive(Clone, Debug)]
pub enum Workload {
    /// Stateless component.
    Deployment(Deployment),
    /// Component with local state.
    StatefulSet(StatefulSet),
}

/// Whether a component runs as a StatefulSet.
pub fn is_stateful(c: &ClusterRef<'_>, comp: Component) -> bool {
    comp == Component::Search && c.cluster.spec.search.backend == SearchBackend::Embedded
}

/// The workload of a component.
pub fn build(
    c: &ClusterRef<'_>,
    comp: Component,
    config: &ConfigMap,
    inputs: &Inputs,
) -> Result<Workload, BuildError> {
    let spec = &c.cluster.spec;
    let workload = comp.workload(spec);
    let template = component_template(c, comp, config, inputs)?;
    let selector = LabelSelector {
        match_labels: Some(c.selector_labels(comp.name())),
        match_expressions: None,
    };
    let metadata = c.meta(c.child_name(comp.name()), comp.name());
    // With an autoscaler the replica count is its to set: leaving the field out of the
    // apply means the operator never owns it, so the two never fight over it.
    let replicas = workload.autoscaling.is_none().then_some(workload.replicas);
    if is_stateful(c, comp) {
        let index = &spec.search.index_storage;
        return Ok(Workload::StatefulSet(StatefulSet {
            metadata,
            spec: Some(StatefulSetSpec {
                replicas,
                service_name: Some(c.child_name(comp.name())),
                selector,
                pod_management_policy: Some("Parallel".into()),
                template,
                persistent_volume_claim_retention_policy: Some(
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some("Delete".into()),
                        when_scaled: Some("Retain".into()),
                    },
                ),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("index".into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        storage_class_name: index.storage_class_name.clone(),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".into(),
                                index.size.clone(),
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
        }));
    }
    // A ReadWriteOnce volume cannot be attached to a surge pod on another node.
    let single_writer = comp == Component::File
        && spec
            .file
            .storage
            .volume
            .as_ref()
            .is_some_and(|v| v.access_mode == VolumeAccessMode::ReadWriteOnce);
    let strategy = if single_writer {
        DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        }
    } else {
        DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_unavailable: Some(IntOrString::Int(0)),
                max_surge: Some(IntOrString::String("25%".into())),
            }),
        }
    };
    Ok(Workload::Deployment(Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas,
            selector,
            strategy: Some(strategy),
            revision_history_limit: Some(5),
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BeehiveClusterSpec, DatastoreSpec};
    use crate::reconcile::build::{configmap, tests::cluster};

    fn build_for(spec: BeehiveClusterSpec, comp: Component) -> Workload {
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        build(&r, comp, &configmap::build(&r), &Inputs::default()).unwrap()
    }

    #[test]
    fn gateway_deployment_rolls_without_losing_capacity() {
        let mut spec = BeehiveClusterSpec::default();
        spec.gateway.workload.replicas = 3;
        let Workload::Deployment(d) = build_for(spec, Component::Gateway) else {
            panic!("deployment")
        };
        let s = d.spec.unwrap();
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.selector.match_labels.as_ref().unwrap().len(), 3);
        let ru = s.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
        // The pod template carries exactly the selector labels and more.
        let pl = s.template.metadata.unwrap().labels.unwrap();
        for (k, v) in s.selector.match_labels.unwrap() {
            assert_eq!(pl[&k], v);
        }
    }

    #[test]
    fn embedded_search_is_a_statefulset_with_an_index_volume() {
        let Workload::StatefulSet(s) = build_for(BeehiveClusterSpec::default(), Component::Search)
        else {
            panic!("statefulset")
        };
        let spec = s.spec.unwrap();
        assert_eq!(
            spec.volume_claim_templates.unwrap()[0]
                .metadata
                .name
                .as_deref(),
            Some("index")
        );
        let env = spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert!(env.iter().any(|e| e.name == "BEEHIVE_SEARCH_INDEX_DIR"));

        let mut es = BeehiveClusterSpec::default();
        es.search.backend = SearchBackend::Elasticsearch;
        es.elasticsearch = Some(DatastoreSpec::default());
        let Workload::Deployment(d) = build_for(es, Component::Search) else {
            panic!("deployment")
        };
        let env = d.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert!(env.iter().any(|e| e.name == "BEEHIVE_ELASTICSEARCH_URL"));
        assert!(!env.iter().any(|e| e.name == "BEEHIVE_SEARCH_INDEX_DIR"));
    }

    #[test]
    fn file_on_a_single_writer_volume_recreates() {
        let Workload::Deployment(d) = build_for(BeehiveClusterSpec::default(), Component::File)
        else {
            panic!("deployment")
        };
        let s = d.spec.unwrap();
        assert_eq!(s.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        let pod = s.template.spec.unwrap();
        assert!(pod.volumes.unwrap().iter().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|p| p.claim_name == "demo-files")
        }));
    }
}
