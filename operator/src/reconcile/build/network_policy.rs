//! Optional NetworkPolicies: the installation's pods accept traffic from each other; the
//! gateway's HTTP port and every pod's admin port (metrics) from anywhere.

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

/// The policies.
pub fn build(c: &ClusterRef<'_>) -> Vec<NetworkPolicy> {
    let default = NetworkPolicy {
        metadata: c.meta(c.child_name("default"), "network-policy"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(instance_selector(c)),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
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
            ]),
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
        let nps = build(&ClusterRef::new(&c).unwrap());
        assert_eq!(nps.len(), 2);
        let gw = nps[1].spec.as_ref().unwrap();
        assert_eq!(
            gw.ingress.as_ref().unwrap()[0].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8080))
        );
        assert!(gw.ingress.as_ref().unwrap()[0].from.is_none());
        let def = nps[0].spec.as_ref().unwrap();
        assert!(def.ingress.as_ref().unwrap()[0].from.is_some());
    }
}
