//! The optional ServiceMonitor (Prometheus Operator), built as an untyped object.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{APP_NAME, ClusterRef, labels};

/// The ServiceMonitor kind.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// The ServiceMonitor, when enabled.
pub fn build(c: &ClusterRef<'_>) -> Option<DynamicObject> {
    let sm = c
        .cluster
        .spec
        .monitoring
        .service_monitor
        .as_ref()
        .filter(|s| s.enabled)?;
    let mut metadata = c.meta(c.child_name("metrics"), "metrics");
    if let Some(l) = metadata.labels.as_mut() {
        l.extend(sm.labels.clone());
    }
    let mut obj = DynamicObject::new(&c.child_name("metrics"), &api_resource());
    obj.metadata = metadata;
    obj.data = json!({
        "spec": {
            "selector": {"matchLabels": {
                labels::NAME: APP_NAME,
                labels::INSTANCE: c.name,
                labels::COMPONENT: "metrics",
            }},
            "namespaceSelector": {"matchNames": [c.namespace]},
            // `component` (gateway, auth, ...) on every series: the alerts and the
            // dashboard group by it.
            "endpoints": [{"port": "admin", "path": "/metrics", "interval": sm.interval,
                "relabelings": [{
                    "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                    "targetLabel": "component",
                }]}],
        }
    });
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BeehiveClusterSpec, ServiceMonitorSpec};
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn service_monitor_selects_the_metrics_service() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        assert!(build(&ClusterRef::new(&c).unwrap()).is_none());
        let mut spec = BeehiveClusterSpec::default();
        spec.monitoring.service_monitor = Some(ServiceMonitorSpec {
            enabled: true,
            interval: "15s".into(),
            labels: [("release".to_string(), "prom".to_string())].into(),
        });
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        let sm = build(&r).unwrap();
        assert_eq!(sm.metadata.labels.as_ref().unwrap()["release"], "prom");
        assert_eq!(sm.data["spec"]["endpoints"][0]["interval"], "15s");
        // The selector matches the metrics Service's labels.
        let svc = crate::reconcile::build::service::metrics(&r);
        let svc_labels = svc.metadata.labels.unwrap();
        for (k, v) in sm.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(svc_labels[k], v.as_str().unwrap());
        }
    }
}
