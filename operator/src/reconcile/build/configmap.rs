//! The ConfigMap with every non-secret `BEEHIVE_*` setting, read by every pod through
//! `envFrom`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::ClusterRef;
use crate::component::ComponentExt as _;
use crate::component::{ADMIN_PORT, Component, GATEWAY_HTTP_PORT};
use crate::crd::LogFormat;

/// Name of the ConfigMap.
pub fn name(c: &ClusterRef<'_>) -> String {
    c.child_name("config")
}

/// Where clients reach a component.
pub fn component_addr(c: &ClusterRef<'_>, comp: Component) -> String {
    let port = if comp == Component::Gateway {
        c.cluster.spec.gateway.service.port
    } else {
        comp.port()
    };
    format!(
        "http://{}.{}.svc:{port}",
        c.child_name(comp.name()),
        c.namespace
    )
}

/// The settings.
pub fn data(c: &ClusterRef<'_>) -> BTreeMap<String, String> {
    let spec = &c.cluster.spec;
    let mut d = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        d.insert(k.to_string(), v);
    };
    set("BEEHIVE_INSTALLATION", c.installation());
    set("BEEHIVE_LOG_LEVEL", spec.logging.level.clone());
    set(
        "BEEHIVE_LOG_FORMAT",
        match spec.logging.format {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
        .into(),
    );
    set("BEEHIVE_ADMIN_ADDR", format!("0.0.0.0:{ADMIN_PORT}"));
    set("BEEHIVE_HTTP_ADDR", format!("0.0.0.0:{GATEWAY_HTTP_PORT}"));
    set(
        "BEEHIVE_DATABASE_MAX_CONNECTIONS",
        spec.database_max_connections.to_string(),
    );
    for comp in crate::component::ALL {
        set(
            &format!("BEEHIVE_{}_ADDR", comp.env_name()),
            component_addr(c, comp),
        );
        set(
            &format!("BEEHIVE_{}_LISTEN", comp.env_name()),
            format!("0.0.0.0:{}", comp.port()),
        );
    }
    set(
        "BEEHIVE_GATEWAY_DRAIN_WINDOW",
        format!("{}s", spec.gateway.drain_seconds),
    );
    set(
        "BEEHIVE_SEARCH_BACKEND",
        spec.search.backend.as_str().into(),
    );
    set(
        "BEEHIVE_SEARCH_BATCH_SIZE",
        spec.search.batch_size.to_string(),
    );
    set(
        "BEEHIVE_SEARCH_COMMIT_INTERVAL",
        format!("{}ms", spec.search.commit_interval_ms),
    );
    set(
        "BEEHIVE_EMAIL_VERIFICATION",
        spec.auth.email_verification.to_string(),
    );
    if let Some(v) = &spec.otlp_endpoint {
        set("BEEHIVE_OTLP_ENDPOINT", v.clone());
    }
    if let Some(v) = &spec.auth.access_token_ttl {
        set("BEEHIVE_ACCESS_TOKEN_TTL", v.clone());
    }
    if let Some(v) = &spec.auth.refresh_token_ttl {
        set("BEEHIVE_REFRESH_TOKEN_TTL", v.clone());
    }
    if let Some(smtp) = &spec.auth.smtp {
        set("BEEHIVE_SMTP_FROM", smtp.from.clone());
    }
    if !spec.gateway.cors_origins.is_empty() {
        set("BEEHIVE_CORS_ORIGINS", spec.gateway.cors_origins.join(","));
    }
    if !spec.gateway.trusted_proxies.is_empty() {
        set(
            "BEEHIVE_TRUSTED_PROXIES",
            spec.gateway.trusted_proxies.join(","),
        );
    }
    set("BEEHIVE_RATE_LIMITS", spec.gateway.rate_limits.to_string());
    d
}

/// The ConfigMap.
pub fn build(c: &ClusterRef<'_>) -> ConfigMap {
    ConfigMap {
        metadata: c.meta(name(c), "config"),
        data: Some(data(c)),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BeehiveClusterSpec, SecretKeyRef, SmtpSpec};
    use crate::reconcile::build::tests::cluster;

    #[test]
    fn addresses_and_listens_follow_the_process_contract() {
        let c = cluster("demo", BeehiveClusterSpec::default());
        let r = ClusterRef::new(&c).unwrap();
        let d = data(&r);
        assert_eq!(d["BEEHIVE_AUTH_ADDR"], "http://demo-auth.chat.svc:50050");
        assert_eq!(d["BEEHIVE_FILE_ADDR"], "http://demo-file.chat.svc:50056");
        assert_eq!(
            d["BEEHIVE_GATEWAY_ADDR"],
            "http://demo-gateway.chat.svc:8080"
        );
        assert_eq!(d["BEEHIVE_PRESENCE_LISTEN"], "0.0.0.0:50054");
        assert_eq!(d["BEEHIVE_ADMIN_ADDR"], "0.0.0.0:9090");
        assert_eq!(d["BEEHIVE_INSTALLATION"], "demo");
        assert_eq!(d["BEEHIVE_LOG_FORMAT"], "json");
        assert_eq!(d["BEEHIVE_SEARCH_BACKEND"], "embedded");
        assert_eq!(d["BEEHIVE_SEARCH_BATCH_SIZE"], "500");
        assert_eq!(d["BEEHIVE_SEARCH_COMMIT_INTERVAL"], "500ms");
        assert!(!d.contains_key("BEEHIVE_SMTP_FROM"));
        for k in d.keys() {
            assert!(k.starts_with("BEEHIVE_"), "{k}");
        }
    }

    #[test]
    fn optional_settings_appear_when_set() {
        let mut spec = BeehiveClusterSpec::default();
        spec.installation = Some("prod".into());
        spec.gateway.cors_origins = vec!["https://a.example".into(), "https://b.example".into()];
        spec.auth.smtp = Some(SmtpSpec {
            secret_ref: SecretKeyRef {
                name: "smtp".into(),
                key: "url".into(),
            },
            from: "no-reply@example.com".into(),
        });
        spec.auth.access_token_ttl = Some("15m".into());
        spec.search.batch_size = 2000;
        spec.search.commit_interval_ms = 2500;
        let c = cluster("demo", spec);
        let d = data(&ClusterRef::new(&c).unwrap());
        assert_eq!(d["BEEHIVE_INSTALLATION"], "prod");
        assert_eq!(
            d["BEEHIVE_CORS_ORIGINS"],
            "https://a.example,https://b.example"
        );
        assert_eq!(d["BEEHIVE_SMTP_FROM"], "no-reply@example.com");
        assert_eq!(d["BEEHIVE_ACCESS_TOKEN_TTL"], "15m");
        assert_eq!(d["BEEHIVE_SEARCH_BATCH_SIZE"], "2000");
        assert_eq!(d["BEEHIVE_SEARCH_COMMIT_INTERVAL"], "2500ms");
    }
}
