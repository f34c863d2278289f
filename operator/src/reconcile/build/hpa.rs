//! HorizontalPodAutoscalers (autoscaling/v2) for the components that have `autoscaling`.
//! The workload then carries no `replicas` (see [`super::workload`]), so the operator's
//! server-side apply never takes the field back from the autoscaler.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::ClusterRef;
use super::workload::is_stateful;
use crate::component::Component;
use crate::component::ComponentExt as _;

/// The autoscaler of a component, when its spec asks for one.
pub fn build(c: &ClusterRef<'_>, comp: Component) -> Option<HorizontalPodAutoscaler> {
    let auto = comp.workload(&c.cluster.spec).autoscaling.as_ref()?;
    let kind = if is_stateful(c, comp) {
        "StatefulSet"
    } else {
        "Deployment"
    };
    Some(HorizontalPodAutoscaler {
        metadata: c.meta(c.child_name(comp.name()), comp.name()),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: kind.into(),
                name: c.child_name(comp.name()),
            },
            min_replicas: Some(auto.min_replicas),
            max_replicas: auto.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(auto.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{AutoscalingSpec, BeehiveClusterSpec};
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn only_for_components_with_autoscaling() {
        let mut spec = BeehiveClusterSpec::default();
        spec.gateway.workload.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 10,
            target_cpu_utilization_percentage: 60,
        });
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        let hpa = build(&r, Component::Gateway).unwrap();
        let spec = hpa.spec.unwrap();
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "demo-gateway");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 10));
        let metric = &spec.metrics.unwrap()[0];
        let target = &metric.resource.as_ref().unwrap().target;
        assert_eq!(target.average_utilization, Some(60));
        assert!(build(&r, Component::Auth).is_none());
    }
}
