//! The generated CRD: fresh on disk, bounded everywhere, CEL rules that parse, stay within
//! the cost budget and catch the mistakes they are meant to; examples that pass them.

use std::path::{Path, PathBuf};

use beehive_operator::crd::{self, BeehiveCluster};
use kube::core::cel::{ScopeContext, Validator, WarningKind, analyze_rule, compile_schema};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema() -> Value {
    let crd = serde_json::to_value(crd::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn generated_files_are_fresh() {
    let yaml = crd::crd_yaml().unwrap();
    let on_disk = std::fs::read_to_string(repo().join("crds/beehive.dev_beehiveclusters.yaml"))
        .unwrap_or_default();
    assert!(
        on_disk == yaml,
        "crds/beehive.dev_beehiveclusters.yaml is stale: run hack/gen-crds.sh"
    );
    let chart = std::fs::read_to_string(
        repo().join("charts/beehive-operator/templates/crds/beehiveclusters.yaml"),
    )
    .unwrap_or_default();
    assert!(
        chart == crd::helm_template(&yaml),
        "the chart's CRD template is stale: run hack/gen-crds.sh"
    );
    let doc = std::fs::read_to_string(repo().join("docs/operator.md")).unwrap_or_default();
    let spliced = crd::splice_reference(&doc, &crd::markdown_reference())
        .expect("reference markers in docs/operator.md");
    assert!(
        spliced == doc,
        "the CRD reference in docs/operator.md is stale: run hack/gen-crds.sh"
    );
}

fn walk(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    match obj.get("type").and_then(Value::as_str) {
        Some("string")
            if !obj.contains_key("maxLength")
                && !obj.contains_key("enum")
                && !obj.contains_key("format") =>
        {
            out.push(format!("{path}: string without maxLength"))
        }
        Some("array") if !obj.contains_key("maxItems") => {
            out.push(format!("{path}: array without maxItems"))
        }
        Some("object")
            if obj.contains_key("additionalProperties") && !obj.contains_key("maxProperties") =>
        {
            out.push(format!("{path}: map without maxProperties"))
        }
        _ => {}
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(v, &format!("{path}.{k}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get(key) {
            walk(child, &format!("{path}[]"), out);
        }
    }
}

#[test]
fn every_string_list_and_map_is_bounded() {
    let mut unbounded = Vec::new();
    walk(&schema(), "", &mut unbounded);
    assert!(unbounded.is_empty(), "{unbounded:#?}");
}

fn rules(node: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let Some(obj) = node.as_object() else { return };
    if let Some(list) = obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in list {
            out.push((path.to_string(), r["rule"].as_str().unwrap().to_string()));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            rules(v, &format!("{path}.{k}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get(key) {
            rules(child, &format!("{path}[]"), out);
        }
    }
}

#[test]
fn cel_rules_parse_and_stay_within_the_cost_budget() {
    let schema = schema();
    let compiled = compile_schema(&schema);
    let mut all = Vec::new();
    rules(&schema, "", &mut all);
    assert!(all.len() >= 9, "expected the CEL rules, found {all:?}");
    fn errors(c: &kube::core::cel::CompiledSchema, out: &mut Vec<String>) {
        for e in c.compilation_errors() {
            out.push(e.to_string());
        }
        for child in c.properties.values() {
            errors(child, out);
        }
        if let Some(i) = &c.items {
            errors(i, out);
        }
    }
    let mut errs = Vec::new();
    errors(&compiled, &mut errs);
    assert!(errs.is_empty(), "{errs:#?}");
    for (path, rule) in &all {
        // Analyse each rule against the schema node it is declared on.
        let mut node = &compiled;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            node = node.properties.get(part).unwrap_or(node);
        }
        for w in analyze_rule(rule, node, ScopeContext::CrdValidation) {
            assert!(
                !matches!(w.kind, WarningKind::CostExceeded | WarningKind::WrongScope),
                "{path}: {rule}: {}",
                w.message
            );
        }
    }
}

fn object(spec: Value) -> Value {
    json!({"apiVersion": "beehive.dev/v1alpha1", "kind": "BeehiveCluster",
           "metadata": {"name": "demo", "namespace": "chat"}, "spec": spec})
}

fn check(obj: &Value, old: Option<&Value>) -> Result<(), String> {
    Validator::new().validate(&schema(), obj, old).map_err(|e| {
        e.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[test]
fn cel_rules_catch_mistakes() {
    assert_eq!(check(&object(json!({})), None), Ok(()));
    let cases = [
        (
            json!({"search": {"backend": "elasticsearch"}}),
            "spec.elasticsearch is required",
        ),
        (
            json!({"search": {"replicas": 2}}),
            "embedded search index lives on one pod",
        ),
        (
            json!({"file": {"replicas": 2}}),
            "ReadWriteOnce file volume",
        ),
        (
            json!({"file": {"storage": {"volume": {}, "s3": {"name": "s3"}}}}),
            "exactly one",
        ),
        (
            json!({"postgres": {"mode": "external"}}),
            "mode external needs external.secretRef",
        ),
        (
            json!({"gateway": {"service": {"nodePort": 30080}}}),
            "nodePort needs type NodePort",
        ),
        (
            json!({"gateway": {"service": {"loadBalancerClass": "x"}}}),
            "loadBalancerClass needs type LoadBalancer",
        ),
    ];
    for (spec, expected) in cases {
        let err = check(&object(spec.clone()), None).expect_err(&spec.to_string());
        assert!(err.contains(expected), "{spec}: {err}");
    }
    // Fine variants of the same fields.
    for spec in [
        json!({"search": {"backend": "elasticsearch", "replicas": 3}, "elasticsearch": {"mode": "managed"}}),
        json!({"file": {"replicas": 3, "storage": {"s3": {"name": "s3"}}}}),
        json!({"file": {"replicas": 2, "storage": {"volume": {"accessMode": "ReadWriteMany"}}}}),
        json!({"gateway": {"service": {"type": "NodePort", "nodePort": 30080}}}),
    ] {
        assert_eq!(check(&object(spec.clone()), None), Ok(()), "{spec}");
    }
    // Name length.
    let mut long = object(json!({}));
    long["metadata"]["name"] = json!("x".repeat(39));
    assert!(check(&long, None).unwrap_err().contains("at most 38"));
    // Installation is immutable.
    let old = object(json!({"installation": "prod"}));
    let new = object(json!({"installation": "other"}));
    assert!(check(&new, Some(&old)).unwrap_err().contains("immutable"));
    assert_eq!(check(&old, Some(&old)), Ok(()));
}

fn examples() -> Vec<(PathBuf, Value)> {
    let dir = repo().join("examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        for doc in docs {
            if doc["kind"] == "BeehiveCluster" {
                out.push((path.clone(), doc));
            }
        }
    }
    out
}

#[test]
fn examples_pass_the_cel_rules_and_parse() {
    let ex = examples();
    assert!(ex.len() >= 2, "expected the dev and production examples");
    for (path, obj) in ex {
        assert_eq!(check(&obj, None), Ok(()), "{}", path.display());
        let parsed: BeehiveCluster =
            serde_json::from_value(obj).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut with_meta = parsed.clone();
        with_meta.metadata.namespace.get_or_insert("chat".into());
        with_meta.metadata.uid = Some("uid".into());
        assert!(
            beehive_operator::reconcile::validate::validate(&with_meta).is_empty(),
            "{}",
            path.display()
        );
        beehive_operator::reconcile::build::build_all(&with_meta, &Default::default()).unwrap();
    }
}

#[test]
fn descriptions_everywhere_in_our_fields() {
    // `kubectl explain` needs a description on every field the operator defines.
    fn walk(node: &Value, path: &str, out: &mut Vec<String>) {
        let Some(props) = node.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, v) in props {
            let p = format!("{path}.{k}");
            if v.get("description").is_none() {
                out.push(p.clone());
            }
            // Embedded Kubernetes types document themselves; stop at them.
            if [
                "resources",
                "affinity",
                "tolerations",
                "topologySpreadConstraints",
                "conditions",
                "size",
            ]
            .contains(&k.as_str())
            {
                continue;
            }
            walk(v, &p, out);
            if let Some(items) = v.get("items") {
                walk(items, &format!("{p}[]"), out);
            }
            if let Some(ap) = v.get("additionalProperties") {
                walk(ap, &format!("{p}{{}}"), out);
            }
        }
    }
    let mut missing = Vec::new();
    walk(&schema(), "", &mut missing);
    missing.retain(|p| p != ".apiVersion" && p != ".kind" && p != ".metadata");
    assert!(missing.is_empty(), "{missing:#?}");
}

/// Snapshot of everything the operator creates for the dev example
/// (tests/snapshots/dev-cluster.yaml). Review the diff, then refresh with
/// `UPDATE_SNAPSHOTS=1 cargo test -p beehive-operator --test crd`.
#[test]
fn dev_example_snapshot() {
    let text = std::fs::read_to_string(repo().join("examples/dev-cluster.yaml")).unwrap();
    let rendered = beehive_operator::render(&text, "beehive").unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/dev-cluster.yaml");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &rendered).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != rendered {
        let first = expected
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(rendered.lines().count()));
        panic!(
            "the objects built for examples/dev-cluster.yaml changed (first difference at line {}):\n  snapshot: {:?}\n  now:      {:?}\nreview, then UPDATE_SNAPSHOTS=1 cargo test -p beehive-operator --test crd",
            first + 1,
            expected.lines().nth(first),
            rendered.lines().nth(first)
        );
    }
}
