//! PodDisruptionBudgets: only for components that may have more than one replica (a fixed
//! count above one, or an autoscaler allowed above one), so a single replica never blocks
//! a node drain.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::ClusterRef;
use crate::component::Component;
use crate::component::ComponentExt as _;

/// The PDB of a component, when it may have more than one replica.
pub fn build(c: &ClusterRef<'_>, comp: Component) -> Option<PodDisruptionBudget> {
    let workload = comp.workload(&c.cluster.spec);
    let most = match &workload.autoscaling {
        Some(auto) => auto.max_replicas,
        None => workload.replicas,
    };
    if most <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: c.meta(c.child_name(comp.name()), comp.name()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(c.selector_labels(comp.name())),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn only_for_more_than_one_replica() {
        let mut spec = BeehiveClusterSpec::default();
        spec.gateway.workload.replicas = 2;
        spec.auth.workload.replicas = 0;
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        let pdb = build(&r, Component::Gateway).unwrap();
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
        assert!(build(&r, Component::Auth).is_none());
        assert!(build(&r, Component::User).is_none());
    }

    #[test]
    fn follows_the_autoscaler() {
        let mut spec = BeehiveClusterSpec::default();
        spec.user.autoscaling = Some(crate::crd::AutoscalingSpec {
            min_replicas: 1,
            max_replicas: 4,
            target_cpu_utilization_percentage: 70,
        });
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        assert!(build(&r, Component::User).is_some());
    }
}
