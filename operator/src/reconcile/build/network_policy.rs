//! Optional NetworkPolicies: the installation's pods accept traffic from each other; the
//! gateway's HTTP port and every pod's admin port (metrics) from anywhere; the search
//! component's gRPC port from the operator's pods (reindex requests).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{APP_NAME, ClusterRef, labels};
use crate::component::ComponentExt as _;
use crate::component::{ADMIN_PORT, Component};

fn instance_selector(c: &ClusterRef<'_>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([
            (labels::NAME.to_string(), APP_NAME.to_string()),
            (labels::INSTANCE.to_string(), c.name.clone()),
        ])),
        match_expressions: None,
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

/// Label `app.kubernetes.io/name` of the operator's pods (the chart's name).
pub const OPERATOR_POD_NAME: &str = "beehive-operator";

/// The operator's pods in its own namespace: a peer naming both matches only them (a pod
/// label alone could be copied by anyone who may create pods in any namespace).
fn operator_peer(operator_namespace: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                operator_namespace.to_string(),
            )])),
            match_expressions: None,
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                labels::NAME.to_string(),
                OPERATOR_POD_NAME.to_string(),
            )])),
            match_expressions: None,
        }),
        ip_block: None,
    }
}

/// The policies; `operator_namespace` (where the operator runs, when known) is admitted to
/// the search component's gRPC port.
pub fn build(c: &ClusterRef<'_>, operator_namespace: Option<&str>) -> Vec<NetworkPolicy> {
    let mut ingress = vec![
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(instance_selector(c)),
                ..NetworkPolicyPeer::default()
            }]),
            ports: None,
        },
        NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![tcp(ADMIN_PORT)]),
        },
    ];
    if let Some(ns) = operator_namespace {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(vec![operator_peer(ns)]),
            ports: Some(vec![tcp(Component::Search.port())]),
        });
    }
    let default = NetworkPolicy {
        metadata: c.meta(c.child_name("default"), "network-policy"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(instance_selector(c)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    };
    let gateway = NetworkPolicy {
        metadata: c.meta(c.child_name("gateway"), "network-policy"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(c.selector_labels(Component::Gateway.name())),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: None,
                ports: Some(vec![tcp(Component::Gateway.port())]),
            }]),
            egress: None,
        }),
    };
    vec![default, gateway]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::BeehiveClusterSpec;
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn gateway_open_rest_internal() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let nps = build(&ClusterRef::new(&c).unwrap(), None);
        assert_eq!(nps.len(), 2);
        let gw = nps[1].spec.as_ref().unwrap();
        assert_eq!(
            gw.ingress.as_ref().unwrap()[0].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8080))
        );
        assert!(gw.ingress.as_ref().unwrap()[0].from.is_none());
        let def = nps[0].spec.as_ref().unwrap();
        assert!(def.ingress.as_ref().unwrap()[0].from.is_some());
        assert_eq!(def.ingress.as_ref().unwrap().len(), 2, "no operator rule");
    }

    #[test]
    fn the_operator_reaches_search_grpc_only() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let nps = build(&ClusterRef::new(&c).unwrap(), Some("beehive-system"));
        let rules = nps[0].spec.as_ref().unwrap().ingress.clone().unwrap();
        let operator = &rules[2];
        assert_eq!(
            operator.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(50055))
        );
        let peer = &operator.from.as_ref().unwrap()[0];
        assert_eq!(
            peer.namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "beehive-system"
        );
        assert_eq!(
            peer.pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app.kubernetes.io/name"],
            "beehive-operator"
        );
    }
}
