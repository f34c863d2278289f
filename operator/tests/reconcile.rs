//! Reconcile tests against a mocked API server (tower-test), asserting every call.

mod support;

use std::sync::Arc;

use beehive_operator::reconcile::build::secret::Entropy;
use beehive_operator::reconcile::build::{ChildKind, Inputs, build_all};
use beehive_operator::reconcile::{self, Context, Error};
use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use support::FakeApi;

const CLUSTERS: &str = "/apis/beehive.dev/v1alpha1/namespaces/chat/beehiveclusters";
const SECRETS: &str = "/api/v1/namespaces/chat/secrets";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/chat/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/namespaces/chat/statefulsets";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/chat/horizontalpodautoscalers";
const JOBS: &str = "/apis/batch/v1/namespaces/chat/jobs";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/chat/events";
const PROMETHEUS_RULES: &str = "/apis/monitoring.coreos.com/v1/namespaces/chat/prometheusrules";
const CONFIGMAPS: &str = "/api/v1/namespaces/chat/configmaps";
const CNPG_CLUSTERS: &str = "/apis/postgresql.cnpg.io/v1/namespaces/chat/clusters";
const RABBITMQ_CLUSTERS: &str = "/apis/rabbitmq.com/v1beta1/namespaces/chat/rabbitmqclusters";
const ELASTICSEARCHES: &str =
    "/apis/elasticsearch.k8s.elastic.co/v1/namespaces/chat/elasticsearches";

fn fixed_now() -> Timestamp {
    Timestamp::from_second(1_767_225_600).unwrap()
}

fn fixed_entropy() -> Entropy {
    Entropy {
        seed: [42; 32],
        password: "generated-password".into(),
    }
}

struct Harness {
    fake: FakeApi,
    ctx: Arc<Context>,
}

impl Harness {
    fn new() -> Self {
        let fake = FakeApi::new();
        let client = fake.client();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "beehive-operator".into(),
                instance: Some("test".into()),
            },
        );
        let mut ctx = Context::new(client, Some(recorder));
        ctx.now = fixed_now;
        ctx.entropy = fixed_entropy;
        Self {
            fake,
            ctx: Arc::new(ctx),
        }
    }

    fn create_cluster(&self, spec: Value) {
        self.fake.seed(
            CLUSTERS,
            json!({"apiVersion": "beehive.dev/v1alpha1", "kind": "BeehiveCluster",
                   "metadata": {"name": "demo", "namespace": "chat"}, "spec": spec}),
        );
        self.fake.take_log();
    }

    fn cluster(&self) -> Value {
        self.fake.get(CLUSTERS, "demo").expect("cluster")
    }

    fn update_spec(&self, f: impl FnOnce(&mut Value)) {
        self.fake
            .modify(CLUSTERS, "demo", true, |o| f(&mut o["spec"]));
        self.fake.take_log();
    }

    async fn reconcile(&self) -> Result<kube::runtime::controller::Action, Error> {
        let obj: DynamicObject = serde_json::from_value(self.cluster()).unwrap();
        reconcile::reconcile(Arc::new(obj), self.ctx.clone()).await
    }

    fn status(&self) -> Value {
        self.cluster()["status"].clone()
    }

    fn condition(&self, t: &str) -> Value {
        self.status()["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == t).cloned())
            .unwrap_or(Value::Null)
    }

    /// Marks every workload ready and the migration done, as the cluster would.
    fn make_everything_ready(&self) {
        for coll in [DEPLOYMENTS, STATEFULSETS] {
            for obj in self.fake.list(coll) {
                let name = obj["metadata"]["name"].as_str().unwrap().to_string();
                let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
                let generation = obj["metadata"]["generation"].clone();
                self.fake.modify(coll, &name, false, |o| {
                    o["status"] = json!({"observedGeneration": generation, "replicas": replicas,
                        "readyReplicas": replicas, "updatedReplicas": replicas});
                });
            }
        }
        for obj in self.fake.list(JOBS) {
            let name = obj["metadata"]["name"].as_str().unwrap().to_string();
            self.fake.modify(JOBS, &name, false, |o| {
                o["status"] = json!({"succeeded": 1})
            });
        }
        self.fake.take_log();
    }
}

fn writes(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|l| !l.starts_with("GET ") && !l.starts_with("LIST "))
        .cloned()
        .collect()
}

/// The LIST calls of one reconcile, in order.
fn child_lists() -> Vec<String> {
    [
        "/api/v1/namespaces/chat/configmaps",
        "/api/v1/namespaces/chat/persistentvolumeclaims",
        "/api/v1/namespaces/chat/services",
        JOBS,
        DEPLOYMENTS,
        STATEFULSETS,
        "/apis/policy/v1/namespaces/chat/poddisruptionbudgets",
        HPAS,
        "/apis/networking.k8s.io/v1/namespaces/chat/networkpolicies",
        "/apis/networking.k8s.io/v1/namespaces/chat/ingresses",
        "/apis/monitoring.coreos.com/v1/namespaces/chat/servicemonitors",
        PROMETHEUS_RULES,
    ]
    .iter()
    .map(|c| format!("LIST {c}"))
    .collect()
}

fn secret_gets() -> Vec<String> {
    ["demo-jwt", "demo-postgres", "demo-rabbitmq", "demo-redis"]
        .iter()
        .map(|n| format!("GET {SECRETS}/{n}"))
        .collect()
}

/// The collection path of a desired object.
fn path_of(kind: &str, name: &str) -> String {
    let coll = match kind {
        "ConfigMap" => "/api/v1/namespaces/chat/configmaps",
        "PersistentVolumeClaim" => "/api/v1/namespaces/chat/persistentvolumeclaims",
        "Service" => "/api/v1/namespaces/chat/services",
        "Job" => JOBS,
        "Deployment" => DEPLOYMENTS,
        "StatefulSet" => STATEFULSETS,
        "PodDisruptionBudget" => "/apis/policy/v1/namespaces/chat/poddisruptionbudgets",
        "HorizontalPodAutoscaler" => HPAS,
        "NetworkPolicy" => "/apis/networking.k8s.io/v1/namespaces/chat/networkpolicies",
        "Ingress" => "/apis/networking.k8s.io/v1/namespaces/chat/ingresses",
        "ServiceMonitor" => "/apis/monitoring.coreos.com/v1/namespaces/chat/servicemonitors",
        "PrometheusRule" => PROMETHEUS_RULES,
        "Cluster" => CNPG_CLUSTERS,
        "RabbitmqCluster" => RABBITMQ_CLUSTERS,
        "Elasticsearch" => ELASTICSEARCHES,
        other => panic!("unknown kind {other}"),
    };
    format!("{coll}/{name}")
}

#[tokio::test]
async fn create_applies_every_child_once_in_order() {
    let h = Harness::new();
    h.create_cluster(json!({}));
    let action = h.reconcile().await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(reconcile::REQUEUE_PROGRESSING)
    );
    let log = h.fake.take_log();

    // The desired objects, with the Secrets as they now exist.
    let cluster: beehive_operator::crd::BeehiveCluster =
        serde_json::from_value(h.cluster()).unwrap();
    let mut inputs = Inputs::default();
    for (name, key) in [
        ("demo-jwt", "signing-key.pem"),
        ("demo-postgres", "url"),
        ("demo-redis", "url"),
        ("demo-rabbitmq", "url"),
    ] {
        let s = h.fake.get(SECRETS, name).unwrap();
        let b64 = s["data"][key].as_str().unwrap();
        let raw = base64_decode(b64);
        inputs.secret_hashes.insert(
            format!("{name}/{key}"),
            beehive_operator::reconcile::build::sha256_hex(&raw),
        );
    }
    let desired = build_all(&cluster, &inputs).unwrap();

    let mut expected = Vec::new();
    for get in secret_gets() {
        expected.push(get.clone());
        expected.push(format!("POST {SECRETS}"));
    }
    expected.push(format!("POST {EVENTS}"));
    expected.extend(child_lists());
    for d in &desired.objects {
        expected.push(format!("APPLY {}", path_of(d.kind.as_str(), &d.name())));
        if d.kind == ChildKind::Job {
            expected.push(format!("POST {EVENTS}"));
        }
    }
    expected.push(format!("APPLY-STATUS {CLUSTERS}/demo/status"));
    assert_eq!(log, expected);

    // Generated Secrets: a PKCS#8 Ed25519 key and full URLs.
    let jwt = h.fake.get(SECRETS, "demo-jwt").unwrap();
    let pem = String::from_utf8(base64_decode(
        jwt["data"]["signing-key.pem"].as_str().unwrap(),
    ))
    .unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let pg = h.fake.get(SECRETS, "demo-postgres").unwrap();
    assert_eq!(
        String::from_utf8(base64_decode(pg["data"]["url"].as_str().unwrap())).unwrap(),
        "postgres://beehive:generated-password@demo-postgres.chat.svc:5432/beehive"
    );
    assert_eq!(
        jwt["metadata"]["ownerReferences"][0]["kind"],
        "BeehiveCluster"
    );

    // Status: observedGeneration, Progressing, components, endpoint.
    let st = h.status();
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(st["phase"], "Progressing");
    assert_eq!(h.condition("Ready")["status"], "False");
    assert_eq!(h.condition("Progressing")["status"], "True");
    assert_eq!(h.condition("Progressing")["reason"], "Migrating");
    assert_eq!(h.condition("Degraded")["status"], "False");
    assert_eq!(st["gatewayEndpoint"], "http://demo-gateway.chat.svc:8080");
    assert_eq!(st["components"]["gateway"]["replicas"], 1);
    assert_eq!(st["components"]["postgres"]["readyReplicas"], 0);

    // Events: the generated Secrets and the migration.
    let reasons: Vec<String> = h
        .fake
        .list(EVENTS)
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    let generated = h
        .fake
        .list(EVENTS)
        .into_iter()
        .find(|e| e["reason"] == "SecretsGenerated")
        .unwrap();
    assert_eq!(
        generated["note"],
        "generated Secrets demo-jwt, demo-postgres, demo-rabbitmq, demo-redis"
    );
    assert!(reasons.contains(&"MigrationStarted".to_string()));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[tokio::test]
async fn unchanged_cluster_causes_no_writes() {
    let h = Harness::new();
    h.create_cluster(json!({}));
    h.reconcile().await.unwrap();
    h.fake.take_log();

    h.reconcile().await.unwrap();
    let log = h.fake.take_log();
    let mut expected = secret_gets();
    expected.extend(child_lists());
    assert_eq!(log, expected, "reads only");

    // Ready: one status write and one event, then silence again.
    h.make_everything_ready();
    let action = h.reconcile().await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(reconcile::REQUEUE_READY)
    );
    assert_eq!(
        writes(&h.fake.take_log()),
        vec![
            format!("APPLY-STATUS {CLUSTERS}/demo/status"),
            format!("POST {EVENTS}")
        ]
    );
    assert_eq!(h.status()["phase"], "Ready");
    assert_eq!(h.condition("Ready")["status"], "True");
    assert_eq!(h.condition("Ready")["reason"], "AllComponentsReady");
    assert_eq!(
        h.condition("Ready")["lastTransitionTime"],
        "2026-01-01T00:00:00Z"
    );
    h.reconcile().await.unwrap();
    assert!(writes(&h.fake.take_log()).is_empty());
}

#[tokio::test]
async fn spec_change_applies_only_what_changed() {
    let h = Harness::new();
    h.create_cluster(json!({}));
    h.reconcile().await.unwrap();
    h.make_everything_ready();
    h.reconcile().await.unwrap();
    h.fake.take_log();

    h.update_spec(|s| s["gateway"] = json!({"replicas": 3}));
    h.reconcile().await.unwrap();
    assert_eq!(
        writes(&h.fake.take_log()),
        vec![
            format!("APPLY {DEPLOYMENTS}/demo-gateway"),
            "APPLY /apis/policy/v1/namespaces/chat/poddisruptionbudgets/demo-gateway".to_string(),
            format!("APPLY-STATUS {CLUSTERS}/demo/status"),
            format!("POST {EVENTS}"),
        ]
    );
    assert_eq!(
        h.fake.get(DEPLOYMENTS, "demo-gateway").unwrap()["spec"]["replicas"],
        3
    );
    assert_eq!(h.status()["observedGeneration"], 2);
    assert_eq!(h.status()["phase"], "Progressing");
    assert_eq!(h.condition("Progressing")["reason"], "RollingOut");

    // A log level change rolls every pod (config hash) but keeps the migration Job.
    h.make_everything_ready();
    h.reconcile().await.unwrap();
    h.fake.take_log();
    h.update_spec(|s| s["logging"] = json!({"level": "debug"}));
    h.reconcile().await.unwrap();
    let w = writes(&h.fake.take_log());
    assert!(w.contains(&"APPLY /api/v1/namespaces/chat/configmaps/demo-config".to_string()));
    assert_eq!(
        w.iter()
            .filter(|l| l.starts_with(&format!("APPLY {DEPLOYMENTS}")))
            .count(),
        7,
        "{w:?}"
    );
    assert!(w.contains(&format!("APPLY {STATEFULSETS}/demo-search")));
    assert!(!w.iter().any(|l| l.contains("/jobs/")), "{w:?}");
}

#[tokio::test]
async fn scale_down_and_disabled_features_delete_orphans() {
    let h = Harness::new();
    h.create_cluster(json!({
        "gateway": {"replicas": 2, "ingress": {"host": "chat.example.com", "tls": {"secretName": "chat-tls"}}},
        "networkPolicy": {"enabled": true}
    }));
    h.reconcile().await.unwrap();
    assert!(
        h.fake
            .get(
                "/apis/networking.k8s.io/v1/namespaces/chat/ingresses",
                "demo-gateway"
            )
            .is_some()
    );
    assert_eq!(
        h.fake
            .list("/apis/networking.k8s.io/v1/namespaces/chat/networkpolicies")
            .len(),
        2
    );
    assert_eq!(h.status()["gatewayEndpoint"], "https://chat.example.com/");
    h.fake.take_log();

    h.update_spec(|s| {
        s["gateway"] = json!({"replicas": 1});
        s["networkPolicy"] = json!({"enabled": false});
    });
    h.reconcile().await.unwrap();
    let w = writes(&h.fake.take_log());
    assert_eq!(
        w,
        vec![
            format!("APPLY {DEPLOYMENTS}/demo-gateway"),
            // Orphans go in the order kinds are listed (ChildKind::ALL).
            "DELETE /apis/policy/v1/namespaces/chat/poddisruptionbudgets/demo-gateway".to_string(),
            "DELETE /apis/networking.k8s.io/v1/namespaces/chat/networkpolicies/demo-default"
                .to_string(),
            "DELETE /apis/networking.k8s.io/v1/namespaces/chat/networkpolicies/demo-gateway"
                .to_string(),
            "DELETE /apis/networking.k8s.io/v1/namespaces/chat/ingresses/demo-gateway".to_string(),
            format!("POST {EVENTS}"),
            format!("APPLY-STATUS {CLUSTERS}/demo/status"),
        ]
    );
    assert!(
        h.fake
            .list("/apis/policy/v1/namespaces/chat/poddisruptionbudgets")
            .is_empty()
    );
    assert_eq!(
        h.status()["gatewayEndpoint"],
        "http://demo-gateway.chat.svc:8080"
    );

    // A new image makes a new migration Job; the old one is pruned.
    let old_jobs: Vec<String> = h
        .fake
        .list(JOBS)
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    h.update_spec(|s| s["image"] = json!({"tag": "9.9.9"}));
    h.reconcile().await.unwrap();
    let w = writes(&h.fake.take_log());
    assert!(
        w.contains(&format!("DELETE {JOBS}/{}", old_jobs[0])),
        "{w:?}"
    );
    let jobs = h.fake.list(JOBS);
    assert_eq!(jobs.len(), 1);
    assert_ne!(jobs[0]["metadata"]["name"], old_jobs[0].as_str());
}

#[tokio::test]
async fn paused_cluster_is_left_alone() {
    let h = Harness::new();
    h.create_cluster(json!({}));
    h.reconcile().await.unwrap();
    h.fake.take_log();
    h.update_spec(|s| {
        s["paused"] = json!(true);
        s["gateway"] = json!({"replicas": 5});
    });
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert_eq!(
        h.fake.take_log(),
        vec![
            format!("APPLY-STATUS {CLUSTERS}/demo/status"),
            format!("POST {EVENTS}")
        ]
    );
    assert_eq!(h.status()["phase"], "Paused");
    assert_eq!(
        h.fake.get(DEPLOYMENTS, "demo-gateway").unwrap()["spec"]["replicas"],
        1
    );
    // Still paused: nothing at all.
    h.reconcile().await.unwrap();
    assert!(h.fake.take_log().is_empty());
    // Resumed: the change is applied.
    h.update_spec(|s| s["paused"] = json!(false));
    h.reconcile().await.unwrap();
    assert_eq!(
        h.fake.get(DEPLOYMENTS, "demo-gateway").unwrap()["spec"]["replicas"],
        5
    );
    let reasons: Vec<String> = h
        .fake
        .list(EVENTS)
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.contains(&"Paused".to_string()) && reasons.contains(&"Resumed".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn drift_is_corrected_and_rollout_restart_kept() {
    let h = Harness::new();
    h.create_cluster(json!({}));
    h.reconcile().await.unwrap();
    h.fake.take_log();
    // kubectl scale and kubectl rollout restart by someone else.
    h.fake.modify(DEPLOYMENTS, "demo-auth", true, |o| {
        o["spec"]["replicas"] = json!(7);
        o["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
            json!("2026-01-01T00:00:00Z");
    });
    h.fake.take_log();
    h.reconcile().await.unwrap();
    let w = writes(&h.fake.take_log());
    assert_eq!(w, vec![format!("APPLY {DEPLOYMENTS}/demo-auth")]);
    let d = h.fake.get(DEPLOYMENTS, "demo-auth").unwrap();
    assert_eq!(d["spec"]["replicas"], 1);
    // The operator's apply does not carry the restart annotation, so the API server keeps
    // it (another field manager owns it); the apply body proves the operator never sets it.
    let cluster: beehive_operator::crd::BeehiveCluster =
        serde_json::from_value(h.cluster()).unwrap();
    let desired = build_all(&cluster, &Inputs::default()).unwrap();
    let dep = &desired
        .get(ChildKind::Deployment, "demo-auth")
        .unwrap()
        .object;
    assert!(
        dep.data["spec"]["template"]["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/restartedAt")
            .is_none()
    );
}

#[tokio::test]
async fn jwt_secret_is_never_overwritten_and_external_secret_changes_roll_pods() {
    let h = Harness::new();
    h.fake.seed(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-jwt", "namespace": "chat"},
               "data": {"signing-key.pem": "ZXhpc3Rpbmc="}}),
    );
    h.fake.seed(
        SECRETS,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg", "namespace": "chat"},
               "data": {"url": "cG9zdGdyZXM6Ly9hQGRiL2I="}}),
    );
    h.create_cluster(
        json!({"postgres": {"mode": "external", "external": {"secretRef": {"name": "pg"}}}}),
    );
    h.reconcile().await.unwrap();
    let log = h.fake.take_log();
    let jwt_get = log
        .iter()
        .position(|l| l == &format!("GET {SECRETS}/demo-jwt"))
        .unwrap();
    assert_ne!(
        log[jwt_get + 1],
        format!("POST {SECRETS}"),
        "an existing JWT Secret is not recreated"
    );
    assert_eq!(
        h.fake.get(SECRETS, "demo-jwt").unwrap()["data"]["signing-key.pem"],
        "ZXhpc3Rpbmc="
    );
    assert!(
        h.fake.get(SECRETS, "demo-postgres").is_none(),
        "no managed postgres"
    );
    assert!(h.fake.get(STATEFULSETS, "demo-postgres").is_none());
    let hash = |name: &str| {
        h.fake.get(DEPLOYMENTS, name).unwrap()["spec"]["template"]["metadata"]["annotations"]["beehive.dev/config-hash"].clone()
    };
    let (auth_before, presence_before) = (hash("demo-auth"), hash("demo-presence"));
    let env =
        h.fake.get(DEPLOYMENTS, "demo-auth").unwrap()["spec"]["template"]["spec"]["containers"][0]
            ["env"]
            .clone();
    let db = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "BEEHIVE_DATABASE_URL")
        .unwrap();
    assert_eq!(db["valueFrom"]["secretKeyRef"]["name"], "pg");

    // The password rotates in the external Secret.
    h.fake.modify(SECRETS, "pg", false, |s| {
        s["data"]["url"] = json!("cG9zdGdyZXM6Ly9iQGRiL2I=")
    });
    h.fake.take_log();
    h.reconcile().await.unwrap();
    let w = writes(&h.fake.take_log());
    assert_ne!(
        hash("demo-auth"),
        auth_before,
        "auth reads the database URL"
    );
    assert_eq!(hash("demo-presence"), presence_before, "presence does not");
    assert!(
        w.iter().any(|l| l.contains("/jobs/")),
        "a new database means a new migration Job: {w:?}"
    );
}

#[tokio::test]
async fn missing_external_secret_degrades_without_applying() {
    let h = Harness::new();
    h.create_cluster(json!({"redis": {"mode": "external", "external": {"secretRef": {"name": "redis-url", "key": "uri"}}}}));
    let action = h.reconcile().await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(reconcile::REQUEUE_PROGRESSING)
    );
    let log = h.fake.take_log();
    assert!(!log.iter().any(|l| l.starts_with("APPLY /")), "{log:?}");
    assert!(log.contains(&format!("GET {SECRETS}/redis-url")));
    assert_eq!(h.status()["phase"], "Degraded");
    assert_eq!(h.condition("Degraded")["reason"], "SecretNotFound");
    assert!(
        h.condition("Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("redis-url/uri")
    );
    let warnings: Vec<Value> = h
        .fake
        .list(EVENTS)
        .into_iter()
        .filter(|e| e["type"] == "Warning")
        .collect();
    assert_eq!(warnings.len(), 1);
}

#[tokio::test]
async fn apply_errors_degrade_and_back_off() {
    let h = Harness::new();
    h.create_cluster(json!({}));
    h.fake
        .fail("APPLY", &format!("{DEPLOYMENTS}/demo-auth"), 500);
    let obj: DynamicObject = serde_json::from_value(h.cluster()).unwrap();
    let err = h.reconcile().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Child {
                action: "applying",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Deployment/demo-auth"));
    assert_eq!(h.status()["phase"], "Degraded");
    assert_eq!(h.condition("Degraded")["reason"], "ApplyFailed");
    let a1 = reconcile::error_policy(Arc::new(obj.clone()), &err, h.ctx.clone());
    let a2 = reconcile::error_policy(Arc::new(obj.clone()), &err, h.ctx.clone());
    assert_eq!(
        a1,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5))
    );
    assert_eq!(
        a2,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(10))
    );
    // Recovery resets the back-off and clears Degraded.
    h.fake.heal();
    h.reconcile().await.unwrap();
    assert_eq!(h.condition("Degraded")["status"], "False");
    let a3 = reconcile::error_policy(Arc::new(obj), &err, h.ctx.clone());
    assert_eq!(
        a3,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(5))
    );

    // An API error while listing is returned too (and retried by the controller).
    h.fake.fail("LIST", DEPLOYMENTS, 503);
    assert!(matches!(h.reconcile().await.unwrap_err(), Error::Kube(_)));
}

#[tokio::test]
async fn invalid_and_malformed_objects_are_reported_on_status() {
    let h = Harness::new();
    h.create_cluster(json!({"search": {"backend": "elasticsearch"}}));
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert_eq!(h.condition("Degraded")["reason"], "InvalidSpec");
    assert!(
        h.condition("Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("spec.elasticsearch")
    );
    assert!(!h.fake.take_log().iter().any(|l| l.starts_with("APPLY /")));

    h.update_spec(|s| *s = json!({"gateway": {"replicas": "many"}}));
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert_eq!(h.condition("Degraded")["reason"], "InvalidObject");
    assert_eq!(h.status()["observedGeneration"], 2);
}

#[tokio::test]
async fn service_monitor_missing_crd_is_tolerated_and_applied_when_enabled() {
    let h = Harness::new();
    h.create_cluster(json!({"monitoring": {"serviceMonitor": {"labels": {"release": "prom"}}}}));
    h.reconcile().await.unwrap();
    let sm = h
        .fake
        .get(
            "/apis/monitoring.coreos.com/v1/namespaces/chat/servicemonitors",
            "demo-metrics",
        )
        .unwrap();
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    // The kind is not served: listing it fails with 404, which is not an error.
    h.fake.fail("LIST", "/apis/monitoring.coreos.com", 404);
    h.update_spec(|s| s["monitoring"] = json!({}));
    h.reconcile().await.unwrap();
}

#[tokio::test]
async fn deleted_cluster_is_left_to_the_garbage_collector() {
    let h = Harness::new();
    h.create_cluster(json!({}));
    h.fake.modify(CLUSTERS, "demo", false, |o| {
        o["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z")
    });
    h.fake.take_log();
    let action = h.reconcile().await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert!(h.fake.take_log().is_empty());
}

#[tokio::test]
async fn autoscaled_components_get_an_hpa_and_no_replica_count() {
    let h = Harness::new();
    h.create_cluster(json!({
        "gateway": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}},
        "message": {"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilizationPercentage": 55}},
    }));
    h.reconcile().await.unwrap();
    let hpa = h
        .fake
        .get(HPAS, "demo-gateway")
        .expect("the gateway's HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 6);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "demo-gateway");
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
    let gateway = h.fake.get(DEPLOYMENTS, "demo-gateway").unwrap();
    assert!(
        gateway["spec"].get("replicas").is_none(),
        "the operator must not own replicas of an autoscaled Deployment: {}",
        gateway["spec"]
    );
    let auth = h.fake.get(DEPLOYMENTS, "demo-auth").unwrap();
    assert_eq!(auth["spec"]["replicas"], 1);
    assert!(
        h.fake
            .get(
                "/apis/policy/v1/namespaces/chat/poddisruptionbudgets",
                "demo-gateway"
            )
            .is_some(),
        "the PDB follows the autoscaler's maximum"
    );
    assert!(h.fake.get(HPAS, "demo-auth").is_none());
    assert_eq!(
        h.fake.get(HPAS, "demo-message").expect("message HPA")["spec"]["metrics"][0]["resource"]["target"]
            ["averageUtilization"],
        55,
        "spec.<component>.autoscaling.targetCPUUtilizationPercentage, as documented"
    );

    // Turning autoscaling off deletes the autoscaler and the operator owns replicas again.
    h.update_spec(|s| s["gateway"] = json!({"replicas": 3}));
    h.reconcile().await.unwrap();
    assert!(h.fake.get(HPAS, "demo-gateway").is_none());
    assert_eq!(
        h.fake.get(DEPLOYMENTS, "demo-gateway").unwrap()["spec"]["replicas"],
        3
    );
}

fn secret(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "chat"},
           "data": data})
}

fn env_of(deployment: &Value) -> Vec<Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn operated_spec() -> Value {
    json!({
        "postgres": {"mode": "cloudnativepg", "cloudnativepg": {"instances": 3}},
        "rabbitmq": {"mode": "rabbitmq-operator"},
        "search": {"backend": "elasticsearch", "replicas": 2},
        "elasticsearch": {"mode": "eck", "eck": {"count": 3}},
    })
}

#[tokio::test]
async fn datastores_of_other_operators_are_created_owned_and_awaited() {
    let h = Harness::new();
    h.create_cluster(operated_spec());
    let action = h.reconcile().await.unwrap();
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(reconcile::REQUEUE_PROGRESSING)
    );
    let log = h.fake.take_log();
    // Their Secrets are awaited, never generated: only the JWT Secret and managed Redis's.
    let posts: Vec<&String> = log
        .iter()
        .filter(|l| *l == &format!("POST {SECRETS}"))
        .collect();
    assert_eq!(posts.len(), 2, "{log:?}");
    assert!(h.fake.get(SECRETS, "demo-postgres-app").is_none());
    for (coll, name) in [
        (CNPG_CLUSTERS, "demo-postgres"),
        (RABBITMQ_CLUSTERS, "demo-rabbitmq"),
        (ELASTICSEARCHES, "demo-es"),
    ] {
        assert!(
            log.contains(&format!("APPLY {coll}/{name}")),
            "{coll}/{name} not applied: {log:?}"
        );
        let obj = h.fake.get(coll, name).unwrap();
        assert_eq!(
            obj["metadata"]["ownerReferences"][0]["kind"],
            "BeehiveCluster"
        );
        assert_eq!(obj["metadata"]["ownerReferences"][0]["controller"], true);
    }
    assert_eq!(
        h.fake.get(CNPG_CLUSTERS, "demo-postgres").unwrap()["spec"]["instances"],
        3
    );
    // No single-replica StatefulSets for them; Redis stays managed.
    assert!(h.fake.get(STATEFULSETS, "demo-postgres").is_none());
    assert!(h.fake.get(STATEFULSETS, "demo-rabbitmq").is_none());
    assert!(h.fake.get(STATEFULSETS, "demo-redis").is_some());

    // The components read the generated Secrets.
    let auth = h.fake.get(DEPLOYMENTS, "demo-auth").unwrap();
    let db = env_of(&auth)
        .into_iter()
        .find(|e| e["name"] == "BEEHIVE_DATABASE_URL")
        .unwrap();
    assert_eq!(db["valueFrom"]["secretKeyRef"]["name"], "demo-postgres-app");
    assert_eq!(db["valueFrom"]["secretKeyRef"]["key"], "uri");
    let message = h.fake.get(DEPLOYMENTS, "demo-message").unwrap();
    let amqp = env_of(&message)
        .into_iter()
        .find(|e| e["name"] == "BEEHIVE_AMQP_URL")
        .unwrap();
    assert_eq!(
        amqp["value"],
        "amqp://$(RABBITMQ_USERNAME):$(RABBITMQ_PASSWORD)@demo-rabbitmq.chat.svc:5672/%2f"
    );

    // Status: waiting for them, not degraded.
    assert_eq!(h.status()["phase"], "Progressing");
    assert_eq!(h.condition("Degraded")["status"], "False");
    let waiting = h.condition("Ready")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        waiting.contains("postgres 0/3 (CloudNativePG: no status yet)"),
        "{waiting}"
    );
    assert!(waiting.contains("rabbitmq 0/3"), "{waiting}");
    assert!(waiting.contains("elasticsearch 0/3"), "{waiting}");

    // The other operators do their work: Secrets appear, the pods that read them roll.
    let hash = |name: &str| {
        h.fake.get(DEPLOYMENTS, name).unwrap()["spec"]["template"]["metadata"]["annotations"]
            ["beehive.dev/config-hash"]
            .clone()
    };
    let (auth_before, presence_before) = (hash("demo-auth"), hash("demo-presence"));
    h.fake.seed(
        SECRETS,
        secret(
            "demo-postgres-app",
            json!({"uri": "cG9zdGdyZXNxbDovL2FwcDpwQGRiL2FwcA=="}),
        ),
    );
    h.fake.seed(
        SECRETS,
        secret(
            "demo-rabbitmq-default-user",
            json!({"username": "dQ==", "password": "cA=="}),
        ),
    );
    h.fake.seed(
        SECRETS,
        secret("demo-es-es-elastic-user", json!({"elastic": "cA=="})),
    );
    h.fake.modify(
        CNPG_CLUSTERS,
        "demo-postgres",
        false,
        |o| {
            o["status"] =
                json!({"phase": "Cluster in healthy state", "readyInstances": 3, "instances": 3})
        },
    );
    h.fake
        .modify(RABBITMQ_CLUSTERS, "demo-rabbitmq", false, |o| {
            o["status"] = json!({"observedGeneration": 1,
            "conditions": [{"type": "AllReplicasReady", "status": "True"}]})
        });
    h.fake.modify(ELASTICSEARCHES, "demo-es", false, |o| {
        o["status"] = json!({"health": "green", "phase": "Ready", "availableNodes": 3, "observedGeneration": 1})
    });
    h.fake.take_log();
    h.reconcile().await.unwrap();
    assert_ne!(
        hash("demo-auth"),
        auth_before,
        "auth reads the database Secret"
    );
    assert_eq!(
        hash("demo-presence"),
        presence_before,
        "presence reads none of them"
    );
    h.make_everything_ready();
    h.reconcile().await.unwrap();
    assert_eq!(h.status()["phase"], "Ready", "{}", h.status());
    assert_eq!(h.status()["components"]["postgres"]["readyReplicas"], 3);
    assert_eq!(
        h.status()["components"]["elasticsearch"]["readyReplicas"],
        3
    );

    // A steady state causes no writes, also with these kinds.
    h.fake.take_log();
    h.reconcile().await.unwrap();
    assert!(writes(&h.fake.take_log()).is_empty());

    // A CloudNativePG failover: fewer ready instances and another phase.
    h.fake.modify(CNPG_CLUSTERS, "demo-postgres", false, |o| {
        o["status"] = json!({"phase": "Failing over", "readyInstances": 2, "instances": 3})
    });
    h.reconcile().await.unwrap();
    assert_eq!(h.status()["phase"], "Progressing");
    assert!(
        h.condition("Ready")["message"]
            .as_str()
            .unwrap()
            .contains("postgres 2/3 (CloudNativePG: Failing over)")
    );
}

#[tokio::test]
async fn a_missing_datastore_operator_is_a_clear_degraded_reason_not_an_error() {
    let h = Harness::new();
    h.fake.fail("LIST", "/apis/postgresql.cnpg.io", 404);
    h.fake.fail("APPLY", "/apis/postgresql.cnpg.io", 404);
    h.create_cluster(json!({"postgres": {"mode": "cloudnativepg"}}));
    let action = h
        .reconcile()
        .await
        .expect("not an error: no crash loop, no back-off");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(reconcile::REQUEUE_PROGRESSING)
    );
    let log = h.fake.take_log();
    assert!(
        !log.iter()
            .any(|l| l.starts_with("APPLY /apis/postgresql.cnpg.io")),
        "a kind that is not served is not applied: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l == &format!("APPLY {DEPLOYMENTS}/demo-auth")),
        "the rest is"
    );
    assert_eq!(h.status()["phase"], "Degraded");
    let degraded = h.condition("Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "CRDNotInstalled");
    let msg = degraded["message"].as_str().unwrap();
    assert!(
        msg.contains("postgresql.cnpg.io/v1 Cluster is not served")
            && msg.contains("install CloudNativePG"),
        "{msg}"
    );
    let warnings = |h: &Harness| {
        h.fake
            .list(EVENTS)
            .into_iter()
            .filter(|e| e["type"] == "Warning")
            .count()
    };
    assert_eq!(warnings(&h), 1);
    // Again and again: reads only, no new event.
    for _ in 0..3 {
        h.reconcile().await.unwrap();
    }
    assert!(writes(&h.fake.take_log()).is_empty());
    assert_eq!(warnings(&h), 1);

    // CloudNativePG gets installed: the Cluster is created and the reason goes away.
    h.fake.heal();
    h.reconcile().await.unwrap();
    assert!(h.fake.get(CNPG_CLUSTERS, "demo-postgres").is_some());
    assert_eq!(h.condition("Degraded")["status"], "False");
}

#[tokio::test]
async fn changing_the_mode_never_deletes_a_database() {
    let h = Harness::new();
    h.create_cluster(json!({"postgres": {"mode": "cloudnativepg"}}));
    h.reconcile().await.unwrap();
    assert!(h.fake.get(CNPG_CLUSTERS, "demo-postgres").is_some());
    h.fake.seed(
        SECRETS,
        secret("pg", json!({"url": "cG9zdGdyZXM6Ly9hQGRiL2I="})),
    );
    h.update_spec(|s| {
        s["postgres"] = json!({"mode": "external", "external": {"secretRef": {"name": "pg"}}})
    });
    h.reconcile().await.unwrap();
    let log = h.fake.take_log();
    assert!(
        !log.iter().any(|l| l.contains("postgresql.cnpg.io")),
        "{log:?}"
    );
    assert!(h.fake.get(CNPG_CLUSTERS, "demo-postgres").is_some());
}

#[tokio::test]
async fn alerts_and_dashboard_follow_spec_monitoring() {
    let h = Harness::new();
    h.create_cluster(
        json!({"monitoring": {"prometheusRule": true, "grafanaDashboard": true,
        "labels": {"release": "prom"}}}),
    );
    h.reconcile().await.unwrap();
    let rule = h
        .fake
        .get(PROMETHEUS_RULES, "demo-alerts")
        .expect("PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        rule["spec"]["groups"][0]["rules"][0]["alert"],
        "BeehiveComponentDown"
    );
    let dash = h
        .fake
        .get(CONFIGMAPS, "demo-dashboard")
        .expect("dashboard ConfigMap");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    assert!(
        dash["data"]["beehive.json"]
            .as_str()
            .unwrap()
            .contains("\"panels\"")
    );
    h.update_spec(|s| s["monitoring"] = json!({}));
    h.reconcile().await.unwrap();
    assert!(h.fake.get(PROMETHEUS_RULES, "demo-alerts").is_none());
    assert!(h.fake.get(CONFIGMAPS, "demo-dashboard").is_none());
    // Without the Prometheus Operator the rule is a clear Degraded reason.
    h.fake.fail("LIST", "/apis/monitoring.coreos.com", 404);
    h.fake.fail("APPLY", "/apis/monitoring.coreos.com", 404);
    h.update_spec(|s| s["monitoring"] = json!({"prometheusRule": true}));
    h.reconcile().await.unwrap();
    assert_eq!(h.condition("Degraded")["reason"], "CRDNotInstalled");
    assert!(
        h.condition("Degraded")["message"]
            .as_str()
            .unwrap()
            .contains("monitoring.coreos.com/v1 PrometheusRule")
    );
}
