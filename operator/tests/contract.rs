//! Contract with the services: every `BEEHIVE_*` variable the operator sets is one the
//! services read (`beehive_common::config::ENV_KEYS`), and the values it sets parse into the
//! services' settings with the addresses of the process contract.

use std::collections::BTreeMap;

use beehive_common::config::{ENV_KEYS, Settings};
use beehive_operator::component::{Component, ComponentExt as _};
use beehive_operator::crd::BeehiveCluster;
use beehive_operator::reconcile::build::{ChildKind, Inputs, build_all};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodTemplateSpec};
use serde_json::json;

fn sample_value(var: &str) -> String {
    match var {
        "BEEHIVE_DATABASE_URL" => "postgres://u:p@db:5432/beehive".into(),
        "BEEHIVE_REDIS_URL" => "redis://:p@redis:6379".into(),
        "BEEHIVE_AMQP_URL" => "amqp://u:p@mq:5672/%2f".into(),
        "BEEHIVE_ELASTICSEARCH_URL" => "http://elastic:p@es:9200".into(),
        "BEEHIVE_SMTP_URL" => "smtps://u:p@smtp.example.com:465".into(),
        "BEEHIVE_FILE_S3_URL" => "s3://a:b@minio:9000/bucket".into(),
        "BEEHIVE_INSTANCE_ID" => "demo-gateway-abc".into(),
        // Read from the Secrets of the RabbitMQ Cluster Operator and ECK (URL-safe).
        "RABBITMQ_USERNAME" => "default_user_abc-_".into(),
        "RABBITMQ_PASSWORD" => "pAss-word_1".into(),
        "ELASTICSEARCH_PASSWORD" => "s3cr3t".into(),
        other => panic!("no sample for {other}"),
    }
}

/// The environment a container sees: the ConfigMap through envFrom plus its env.
fn environment(config: &ConfigMap, c: &Container) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if c.env_from
        .as_ref()
        .is_some_and(|f| f.iter().any(|s| s.config_map_ref.is_some()))
    {
        env.extend(config.data.clone().unwrap_or_default());
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value {
            Some(v) => expand(v, &env),
            None => sample_value(&e.name),
        };
        env.insert(e.name.clone(), value);
    }
    env
}

/// The kubelet's `$(VAR)` expansion: a variable defined earlier in the container's
/// environment is substituted; anything else is left as written.
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) if env.contains_key(&after[..end]) => {
                out.push_str(&env[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn clusters() -> Vec<BeehiveCluster> {
    let specs = [
        json!({}),
        json!({
            "search": {"backend": "elasticsearch", "replicas": 2},
            "elasticsearch": {"mode": "managed"},
            "file": {"storage": {"s3": {"name": "s3"}}},
            "auth": {"smtp": {"secretRef": {"name": "smtp"}, "from": "a@example.com"},
                     "accessTokenTtl": "15m", "refreshTokenTtl": "30d"},
            "gateway": {"corsOrigins": ["https://a.example"], "trustedProxies": ["10.0.0.0/8"], "rateLimits": false},
            "otlpEndpoint": "http://otel:4317",
            "installation": "prod"
        }),
        json!({
            "postgres": {"mode": "cloudnativepg"},
            "rabbitmq": {"mode": "rabbitmq-operator"},
            "search": {"backend": "elasticsearch", "replicas": 2, "batchSize": 1000, "commitIntervalMs": 250},
            "elasticsearch": {"mode": "eck"},
        }),
    ];
    specs
        .into_iter()
        .map(|spec| {
            let mut c: BeehiveCluster = serde_json::from_value(json!({
                "apiVersion": "beehive.dev/v1alpha1", "kind": "BeehiveCluster",
                "metadata": {"name": "demo", "namespace": "chat", "uid": "u1"}, "spec": spec
            }))
            .unwrap();
            c.metadata.generation = Some(1);
            c
        })
        .collect()
}

#[test]
fn every_variable_set_is_read_by_the_services_and_parses() {
    for cluster in clusters() {
        let desired = build_all(&cluster, &Inputs::default()).unwrap();
        let config: ConfigMap = desired
            .get(ChildKind::ConfigMap, "demo-config")
            .unwrap()
            .parse()
            .unwrap();
        let mut pods: Vec<(Option<Component>, PodTemplateSpec)> = Vec::new();
        for comp in beehive_operator::component::ALL {
            let name = format!("demo-{}", comp.name());
            let template = match desired.get(ChildKind::Deployment, &name) {
                Some(d) => d.parse::<Deployment>().unwrap().spec.unwrap().template,
                None => {
                    desired
                        .get(ChildKind::StatefulSet, &name)
                        .unwrap()
                        .parse::<StatefulSet>()
                        .unwrap()
                        .spec
                        .unwrap()
                        .template
                }
            };
            pods.push((Some(comp), template));
        }
        let job = desired
            .objects
            .iter()
            .find(|o| o.kind == ChildKind::Job)
            .unwrap();
        pods.push((None, job.parse::<Job>().unwrap().spec.unwrap().template));

        for (comp, template) in pods {
            let pod = template.spec.unwrap();
            for c in pod
                .containers
                .iter()
                .chain(pod.init_containers.iter().flatten())
            {
                let env = environment(&config, c);
                for key in env.keys().filter(|k| k.starts_with("BEEHIVE_")) {
                    assert!(
                        ENV_KEYS.contains(&key.as_str()),
                        "{comp:?}/{}: {key} is not read by the services",
                        c.name
                    );
                }
                // The process reads the BEEHIVE_* variables only (Settings::load).
                let beehive: BTreeMap<String, String> = env
                    .iter()
                    .filter(|(k, _)| k.starts_with("BEEHIVE_"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let (settings, report) = Settings::from_map(&beehive).unwrap_or_else(|e| {
                    panic!(
                        "{comp:?}/{}: the services reject the operator's settings: {e}",
                        c.name
                    )
                });
                assert!(report.unknown_keys.is_empty(), "{:?}", report.unknown_keys);
                for other in beehive_operator::component::ALL {
                    if other.is_grpc() {
                        assert_eq!(settings.listen_addr(other).port(), other.port() as u16);
                        assert_eq!(
                            settings.component_addr(other),
                            format!("http://demo-{}.chat.svc:{}", other.name(), other.port())
                        );
                    }
                }
                assert!(
                    env.values().all(|v| !v.contains("$(")),
                    "{comp:?}/{}: a $(VAR) reference is not expanded: {env:?}",
                    c.name
                );
                if env.contains_key("RABBITMQ_USERNAME") {
                    assert_eq!(
                        env["BEEHIVE_AMQP_URL"],
                        "amqp://default_user_abc-_:pAss-word_1@demo-rabbitmq.chat.svc:5672/%2f"
                    );
                }
                if comp == Some(Component::Search) && env.contains_key("ELASTICSEARCH_PASSWORD") {
                    assert_eq!(
                        env["BEEHIVE_ELASTICSEARCH_URL"],
                        "http://elastic:s3cr3t@demo-es-es-http.chat.svc:9200"
                    );
                    assert_eq!(settings.search_batch_size, 1000);
                    assert_eq!(
                        settings.search_commit_interval,
                        std::time::Duration::from_millis(250)
                    );
                }
                assert_eq!(settings.http_addr.port(), 8080);
                assert_eq!(settings.admin_addr.port(), 9090);
            }
        }
    }
}

#[test]
fn the_contract_list_matches_the_operators_expectation() {
    // The names the operator's issue lists, kept here so a rename in either place fails.
    let mut expected = vec![
        "BEEHIVE_CONFIG_FILE",
        "BEEHIVE_DATABASE_URL",
        "BEEHIVE_DATABASE_MAX_CONNECTIONS",
        "BEEHIVE_REDIS_URL",
        "BEEHIVE_AMQP_URL",
        "BEEHIVE_HTTP_ADDR",
        "BEEHIVE_ADMIN_ADDR",
        "BEEHIVE_INSTANCE_ID",
        "BEEHIVE_LOG_FORMAT",
        "BEEHIVE_LOG_LEVEL",
        "BEEHIVE_OTLP_ENDPOINT",
        "BEEHIVE_JWT_SECRET_FILE",
        "BEEHIVE_ELASTICSEARCH_URL",
        "BEEHIVE_INSTALLATION",
        "BEEHIVE_RATE_LIMITS",
        "BEEHIVE_TRUSTED_PROXIES",
        "BEEHIVE_CORS_ORIGINS",
        "BEEHIVE_SMTP_URL",
        "BEEHIVE_SMTP_FROM",
        "BEEHIVE_EMAIL_VERIFICATION",
        "BEEHIVE_ACCESS_TOKEN_TTL",
        "BEEHIVE_REFRESH_TOKEN_TTL",
        "BEEHIVE_SEARCH_BACKEND",
        "BEEHIVE_SEARCH_INDEX_DIR",
        "BEEHIVE_FILE_STORAGE_DIR",
        "BEEHIVE_FILE_S3_URL",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    for c in beehive_operator::component::ALL {
        expected.push(format!("BEEHIVE_{}_ADDR", c.env_name()));
        expected.push(format!("BEEHIVE_{}_LISTEN", c.env_name()));
    }
    for key in expected {
        assert!(
            ENV_KEYS.contains(&key.as_str()),
            "{key} missing from beehive_common::config::ENV_KEYS"
        );
    }
}
