//! Services: headless for the gRPC components (clients resolve every pod IP and balance
//! over them), a normal one for the gateway, and a headless metrics Service for scraping.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{APP_NAME, ClusterRef, labels};
use crate::component::ComponentExt as _;
use crate::component::{ADMIN_PORT, Component};
use crate::crd::{ServiceType, TrafficPolicy};

/// Name of the metrics Service.
pub fn metrics_name(c: &ClusterRef<'_>) -> String {
    c.child_name("metrics")
}

fn port(name: &str, port: i32, target: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        app_protocol: None,
        ..ServicePort::default()
    }
}

/// The Service of a component.
pub fn component(c: &ClusterRef<'_>, comp: Component) -> Service {
    let mut metadata = c.meta(c.child_name(comp.name()), comp.name());
    if comp.is_grpc() {
        let mut p = port("grpc", comp.port(), comp.port());
        p.app_protocol = Some("kubernetes.io/h2c".into());
        return Service {
            metadata,
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some(c.selector_labels(comp.name())),
                ports: Some(vec![p]),
                publish_not_ready_addresses: Some(false),
                ..ServiceSpec::default()
            }),
            status: None,
        };
    }
    let svc = &c.cluster.spec.gateway.service;
    if !svc.annotations.is_empty() {
        metadata.annotations = Some(svc.annotations.clone());
    }
    let mut p = port("http", svc.port, comp.port());
    if svc.type_ != ServiceType::ClusterIP {
        p.node_port = svc.node_port;
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(svc.type_.as_str().into()),
            selector: Some(c.selector_labels(comp.name())),
            ports: Some(vec![p]),
            load_balancer_class: svc.load_balancer_class.clone(),
            external_traffic_policy: if svc.type_ == ServiceType::ClusterIP {
                None
            } else {
                svc.external_traffic_policy.map(|p| match p {
                    TrafficPolicy::Cluster => "Cluster".to_string(),
                    TrafficPolicy::Local => "Local".to_string(),
                })
            },
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A headless Service over every component pod's admin port, for the ServiceMonitor.
pub fn metrics(c: &ClusterRef<'_>) -> Service {
    let selector = [
        (labels::NAME.to_string(), APP_NAME.to_string()),
        (labels::INSTANCE.to_string(), c.name.clone()),
        (labels::METRICS.to_string(), "true".to_string()),
    ]
    .into_iter()
    .collect();
    Service {
        metadata: ObjectMeta {
            ..c.meta(metrics_name(c), "metrics")
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ports: Some(vec![port("admin", ADMIN_PORT, ADMIN_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn grpc_services_are_headless_and_gateway_is_not() {
        let mut spec = BeehiveClusterSpec::default();
        spec.gateway.service.type_ = ServiceType::NodePort;
        spec.gateway.service.node_port = Some(30080);
        spec.gateway
            .service
            .annotations
            .insert("a".into(), "b".into());
        let c = cluster("demo", spec);
        let r = ClusterRef::new(&c).unwrap();
        for comp in crate::component::ALL {
            let s = component(&r, comp);
            let spec = s.spec.unwrap();
            if comp.is_grpc() {
                assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "{comp:?}");
                assert_eq!(spec.ports.unwrap()[0].port, comp.port());
            } else {
                assert_eq!(spec.cluster_ip, None);
                assert_eq!(spec.type_.as_deref(), Some("NodePort"));
                let p = &spec.ports.unwrap()[0];
                assert_eq!((p.port, p.node_port), (8080, Some(30080)));
                assert_eq!(p.target_port, Some(IntOrString::Int(8080)));
                assert_eq!(s.metadata.annotations.unwrap()["a"], "b");
            }
        }
        let m = metrics(&r).spec.unwrap();
        assert_eq!(m.ports.unwrap()[0].port, 9090);
    }
}
