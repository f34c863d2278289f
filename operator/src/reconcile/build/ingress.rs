//! The optional Ingress of the gateway, with TLS.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as K8sIngressSpec, IngressTLS, ServiceBackendPort,
};

use super::ClusterRef;
use crate::component::Component;

/// The Ingress, when spec.gateway.ingress is set.
pub fn build(c: &ClusterRef<'_>) -> Option<Ingress> {
    let spec = c.cluster.spec.gateway.ingress.as_ref()?;
    let mut metadata = c.meta(c.child_name("gateway"), Component::Gateway.name());
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    Some(Ingress {
        metadata,
        spec: Some(K8sIngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: spec.tls.as_ref().map(|tls| {
                vec![IngressTLS {
                    hosts: Some(vec![spec.host.clone()]),
                    secret_name: Some(tls.secret_name.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(spec.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(spec.path.clone()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: c.child_name(Component::Gateway.name()),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            default_backend: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BeehiveClusterSpec, IngressSpec, IngressTlsSpec};
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn ingress_with_tls() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        assert!(build(&ClusterRef::new(&c).unwrap()).is_none());
        let mut spec = BeehiveClusterSpec::default();
        spec.gateway.ingress = Some(IngressSpec {
            host: "chat.example.com".into(),
            class_name: Some("nginx".into()),
            path: "/".into(),
            annotations: [(
                "cert-manager.io/cluster-issuer".to_string(),
                "le".to_string(),
            )]
            .into(),
            tls: Some(IngressTlsSpec {
                secret_name: "chat-tls".into(),
            }),
        });
        let c = cluster("demo", spec);
        let ing = build(&ClusterRef::new(&c).unwrap()).unwrap();
        let s = ing.spec.unwrap();
        assert_eq!(s.tls.unwrap()[0].secret_name.as_deref(), Some("chat-tls"));
        let rule = &s.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("chat.example.com"));
        assert_eq!(
            rule.http.as_ref().unwrap().paths[0]
                .backend
                .service
                .as_ref()
                .unwrap()
                .name,
            "demo-gateway"
        );
        assert_eq!(
            ing.metadata.annotations.unwrap()["cert-manager.io/cluster-issuer"],
            "le"
        );
    }
}
