//! The objects the operator creates for datastores run by other operators (CloudNativePG,
//! the RabbitMQ Cluster Operator, ECK) validate against those projects' CRD schemas
//! (excerpts under tests/fixtures/external-crds, sources in its README), strictly: a field
//! the schema does not have is refused, as the API server's strict field validation would.

use beehive_operator::crd::BeehiveCluster;
use beehive_operator::crd_validation::validate_object;
use beehive_operator::reconcile::build::{ChildKind, DesiredObject, Inputs, build_all};
use serde_json::{Value, json};

struct Fixture {
    group: String,
    version: String,
    kind: String,
    schema: Value,
}

fn fixture(file: &str) -> Fixture {
    let path = format!(
        "{}/tests/fixtures/external-crds/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    Fixture {
        group: v["group"].as_str().unwrap().into(),
        version: v["version"].as_str().unwrap().into(),
        kind: v["kind"].as_str().unwrap().into(),
        schema: v["openAPIV3Schema"].clone(),
    }
}

fn fixture_for(kind: ChildKind) -> Fixture {
    fixture(match kind {
        ChildKind::PostgresCluster => "postgresql.cnpg.io_clusters.yaml",
        ChildKind::RabbitmqCluster => "rabbitmq.com_rabbitmqclusters.yaml",
        ChildKind::Elasticsearch => "elasticsearch.k8s.elastic.co_elasticsearches.yaml",
        other => panic!("no fixture for {other}"),
    })
}

fn cluster(spec: Value) -> BeehiveCluster {
    let mut c: BeehiveCluster = serde_json::from_value(json!({
        "apiVersion": "beehive.dev/v1alpha1", "kind": "BeehiveCluster",
        "metadata": {"name": "demo", "namespace": "chat", "uid": "u1"}, "spec": spec
    }))
    .unwrap();
    c.metadata.generation = Some(1);
    c
}

fn operated_objects(spec: Value) -> Vec<DesiredObject> {
    build_all(&cluster(spec), &Inputs::default())
        .unwrap()
        .objects
        .into_iter()
        .filter(|o| o.kind.is_datastore())
        .collect()
}

fn check(o: &DesiredObject) -> Vec<String> {
    let f = fixture_for(o.kind);
    let value = serde_json::to_value(&o.object).unwrap();
    assert_eq!(
        value["apiVersion"],
        format!("{}/{}", f.group, f.version),
        "{}",
        o.key()
    );
    assert_eq!(value["kind"], f.kind.as_str(), "{}", o.key());
    validate_object(&value, &f.schema)
        .into_iter()
        .map(|f| f.to_string())
        .collect()
}

fn specs() -> Vec<Value> {
    vec![
        // Every default.
        json!({
            "postgres": {"mode": "cloudnativepg"},
            "rabbitmq": {"mode": "rabbitmq-operator"},
            "search": {"backend": "elasticsearch"},
            "elasticsearch": {"mode": "eck"},
        }),
        // Every field set.
        json!({
            "postgres": {"mode": "cloudnativepg", "cloudnativepg": {
                "instances": 3, "imageName": "ghcr.io/cloudnative-pg/postgresql:17.6",
                "storage": {"size": "50Gi", "storageClassName": "fast"},
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}}},
            "rabbitmq": {"mode": "rabbitmq-operator", "rabbitmqOperator": {
                "replicas": 5, "image": "rabbitmq:4.1-management",
                "storage": {"size": "20Gi", "storageClassName": "fast"},
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}}},
            "search": {"backend": "elasticsearch", "replicas": 2},
            "elasticsearch": {"mode": "eck", "eck": {
                "version": "8.19.4", "count": 3,
                "storage": {"size": "100Gi", "storageClassName": "fast"},
                "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}}},
        }),
    ]
}

#[test]
fn operated_datastores_validate_strictly_against_their_crds() {
    for spec in specs() {
        let objects = operated_objects(spec.clone());
        let kinds: Vec<ChildKind> = objects.iter().map(|o| o.kind).collect();
        assert_eq!(
            kinds,
            vec![
                ChildKind::PostgresCluster,
                ChildKind::RabbitmqCluster,
                ChildKind::Elasticsearch
            ],
            "{spec}"
        );
        for o in &objects {
            let findings = check(o);
            assert!(findings.is_empty(), "{}: {findings:#?}", o.key());
        }
    }
}

#[test]
fn the_strict_check_refuses_what_the_crds_do_not_have() {
    let objects = operated_objects(specs().remove(1));
    let mut pg = objects[0].clone();
    pg.object.data["spec"]["instancesCount"] = json!(3);
    pg.object.data["spec"]["instances"] = json!("three");
    let findings = check(&pg).join("\n");
    assert!(
        findings.contains("spec.instancesCount: unknown field"),
        "{findings}"
    );
    assert!(findings.contains("must be of type integer"), "{findings}");

    // The RabbitmqCluster's resources have no `claims` (unlike core ResourceRequirements).
    let mut mq = objects[1].clone();
    mq.object.data["spec"]["resources"]["claims"] = json!([{"name": "gpu"}]);
    assert!(
        check(&mq)
            .join("\n")
            .contains("spec.resources.claims: unknown field")
    );

    // ECK node set names are at most 23 characters.
    let mut es = objects[2].clone();
    es.object.data["spec"]["nodeSets"][0]["name"] = json!("a-node-set-name-that-is-too-long");
    assert!(check(&es).join("\n").contains("at most 23 chars"));

    // Unknown fields in preserved subtrees (ECK's node config) are fine, as on the server.
    let mut es = objects[2].clone();
    es.object.data["spec"]["nodeSets"][0]["config"] = json!({"node.store.allow_mmap": false});
    assert!(check(&es).is_empty());
}
