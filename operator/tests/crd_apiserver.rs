//! The generated CRD against what a Kubernetes API server checks before it accepts a
//! CustomResourceDefinition (beehive_operator::crd_validation), read from the YAML on disk,
//! never from the Rust types. Each check is also shown to fire on a CRD broken the way it
//! guards against, starting with the two faults a real kube-apiserver 1.36 reported.
//! scripts/test-operator.sh runs the same checks over the chart rendered by `helm template`
//! and over charts/install.yaml.

use std::path::Path;

use beehive_operator::crd_validation::{Finding, check_crd, check_manifests};
use serde_json::{Value, json};

fn shipped_yaml() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/beehive.dev_beehiveclusters.yaml");
    std::fs::read_to_string(&path).expect("crds/beehive.dev_beehiveclusters.yaml")
}

fn shipped() -> Value {
    serde_saphyr::from_str(&shipped_yaml()).expect("the CRD parses")
}

fn spec_schema(crd: &mut Value) -> &mut Value {
    &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

fn root_schema(crd: &mut Value) -> &mut Value {
    &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

fn render(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("\n  {f}")).collect()
}

/// Asserts that `mutate` makes the checker report a finding whose path ends with
/// `path_suffix` and whose message contains `message`.
fn refused(mutate: impl FnOnce(&mut Value), path_suffix: &str, message: &str) {
    let mut crd = shipped();
    mutate(&mut crd);
    let findings = check_crd(&crd);
    assert!(
        findings
            .iter()
            .any(|f| f.path.ends_with(path_suffix) && f.message.contains(message)),
        "expected `{path_suffix}: …{message}…`, got:{}",
        render(&findings)
    );
}

#[test]
fn the_shipped_crd_passes_every_api_server_check() {
    let report = check_manifests(&shipped_yaml()).unwrap();
    assert_eq!(report.crds, vec!["beehiveclusters.beehive.dev".to_string()]);
    assert!(report.findings.is_empty(), "{}", render(&report.findings));
}

#[test]
fn the_two_faults_a_real_api_server_reported_are_caught() {
    // kube-apiserver 1.36 refused the CRD of 0.1.0 with exactly these two errors:
    //   ...properties[spec].properties[logging].default.level: Invalid value: "": level in
    //      body should be at least 1 chars long
    //   ...x-kubernetes-validations[0].fieldPath: Invalid value: ".metadata.name": must be
    //      a valid path
    let mut crd = shipped();
    spec_schema(&mut crd)["properties"]["logging"]["default"] =
        json!({"format": "json", "level": ""});
    root_schema(&mut crd)["x-kubernetes-validations"][0]["fieldPath"] = json!(".metadata.name");
    let findings = check_crd(&crd);
    let text = render(&findings);
    assert_eq!(findings.len(), 2, "{text}");
    assert!(
        text.contains("properties[spec].properties[logging].default.level: Invalid value: \"\": level in body should be at least 1 chars long"),
        "{text}"
    );
    assert!(
        text.contains("openAPIV3Schema.x-kubernetes-validations[0].fieldPath: Invalid value: \".metadata.name\": fieldPath must be a valid path"),
        "{text}"
    );
}

#[test]
fn defaults_must_pass_their_own_schema() {
    // An enum default outside the enum.
    refused(
        |c| {
            spec_schema(c)["properties"]["logging"]["properties"]["format"]["default"] =
                json!("yaml")
        },
        "properties[logging].properties[format].default",
        "should be one of",
    );
    // A nested default that only fails once its children are defaulted: the object default
    // leaves `port` out, and port's own default is out of range.
    refused(
        |c| {
            let gateway = &mut spec_schema(c)["properties"]["gateway"];
            gateway["default"]["service"] = json!({"type": "ClusterIP"});
            gateway["properties"]["service"]["default"] = json!({"type": "ClusterIP"});
            gateway["properties"]["service"]["properties"]["port"]["default"] = json!(0);
        },
        "properties[gateway].default.service.port",
        "should be greater than or equal to 1 (once the default's own fields are defaulted)",
    );
    // A default with a field the schema does not have is pruned by the API server.
    refused(
        |c| spec_schema(c)["properties"]["logging"]["default"]["colour"] = json!(true),
        "properties[logging].default",
        "must not have unknown fields",
    );
    // A default that breaks a CEL rule of its own subtree.
    refused(
        |c| {
            spec_schema(c)["properties"]["file"]["properties"]["storage"]["default"] =
                json!({"volume": {"size": "1Gi"}, "s3": {"name": "s3"}})
        },
        "properties[file].properties[storage].default",
        "exactly one",
    );
    // null only where nullable.
    refused(
        |c| spec_schema(c)["properties"]["paused"]["default"] = Value::Null,
        "properties[paused].default",
        "must not be null",
    );
    // No default at the root or in metadata.
    refused(
        |c| root_schema(c)["default"] = json!({}),
        "openAPIV3Schema.default",
        "must not be set at the root",
    );
}

#[test]
fn cel_rules_refer_to_fields_that_exist_and_read_only_bounded_ones() {
    refused(
        |c| spec_schema(c)["x-kubernetes-validations"][0]["fieldPath"] = json!(".search.nothing"),
        "properties[spec].x-kubernetes-validations[0].fieldPath",
        "does not refer to a valid field",
    );
    refused(
        |c| spec_schema(c)["x-kubernetes-validations"][0]["fieldPath"] = json!(".tolerations[0]"),
        "x-kubernetes-validations[0].fieldPath",
        "must be a valid path",
    );
    refused(
        |c| spec_schema(c)["x-kubernetes-validations"][0]["reason"] = json!("Whatever"),
        "x-kubernetes-validations[0].reason",
        "Unsupported value",
    );
    refused(
        |c| spec_schema(c)["x-kubernetes-validations"][0]["message"] = json!("two\nlines"),
        "x-kubernetes-validations[0].message",
        "line breaks",
    );
    refused(
        |c| {
            spec_schema(c)["properties"]["installation"]
                .as_object_mut()
                .unwrap()
                .remove("maxLength");
        },
        "rule",
        "the rule reads self.installation, a string without maxLength",
    );
    refused(
        |c| spec_schema(c)["x-kubernetes-validations"][0]["rule"] = json!("self.search.backend =="),
        "properties[spec].x-kubernetes-validations[0].rule",
        "compilation failed",
    );
    // oldSelf cannot be correlated inside a plain list.
    refused(
        |c| {
            spec_schema(c)["properties"]["gateway"]["properties"]["tolerations"]["items"]["x-kubernetes-validations"] =
                json!([{"rule": "self == oldSelf", "message": "immutable"}])
        },
        "tolerations].items.x-kubernetes-validations[0].rule",
        "uncorrelatable",
    );
}

#[test]
fn metadata_extensions_and_keywords_are_where_the_api_server_allows_them() {
    refused(
        |c| {
            root_schema(c)["properties"]["metadata"] = json!({"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 38},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}})
        },
        "openAPIV3Schema.properties[metadata]",
        "must not specify anything other than name and generateName",
    );
    refused(
        |c| spec_schema(c)["properties"]["paused"]["x-kubernetes-list-type"] = json!("set"),
        "properties[paused].type",
        "must be array if x-kubernetes-list-type is specified",
    );
    refused(
        |c| spec_schema(c)["properties"]["paused"]["x-kubernetes-map-type"] = json!("atomic"),
        "properties[paused].type",
        "must be object if x-kubernetes-map-type is specified",
    );
    refused(
        |c| {
            spec_schema(c)["properties"]["paused"]["x-kubernetes-preserve-unknown-fields"] =
                json!(false)
        },
        "properties[paused].x-kubernetes-preserve-unknown-fields",
        "must be true or undefined",
    );
    refused(
        |c| spec_schema(c)["properties"]["paused"]["x-kubernetes-shiny"] = json!(true),
        "properties[paused].x-kubernetes-shiny",
        "unknown field",
    );
    refused(
        |c| root_schema(c)["nullable"] = json!(true),
        "openAPIV3Schema.nullable",
        "must not be used at the root",
    );
    refused(
        |c| spec_schema(c)["anyOf"] = json!([{"type": "object", "required": ["image"]}]),
        "properties[spec].anyOf[0].type",
        "must be empty to be structural",
    );
    refused(
        |c| spec_schema(c)["anyOf"] = json!([{"properties": {"nothing": {"minLength": 1}}}]),
        "properties[spec].anyOf[0].properties[nothing]",
        "not specified in the structural part",
    );
    refused(
        |c| spec_schema(c)["properties"]["paused"]["type"] = json!(""),
        "properties[paused].type",
        "must not be empty for specified object fields",
    );
    refused(
        |c| {
            spec_schema(c)["properties"]["gateway"]["properties"]["tolerations"]["uniqueItems"] =
                json!(true)
        },
        "uniqueItems",
        "quadratic",
    );
    refused(
        |c| {
            spec_schema(c)["properties"]["logging"]["additionalProperties"] =
                json!({"type": "string"})
        },
        "properties[logging].additionalProperties",
        "mutual exclusive",
    );
}

#[test]
fn names_and_versions_are_checked() {
    refused(
        |c| c["metadata"]["name"] = json!("beehive"),
        "metadata.name",
        "spec.names.plural",
    );
    refused(
        |c| c["spec"]["versions"][0]["storage"] = json!(false),
        "spec.versions",
        "storage version",
    );
    refused(
        |c| c["spec"]["versions"][0]["additionalPrinterColumns"][0]["type"] = json!("text"),
        "additionalPrinterColumns[0].type",
        "must be integer",
    );
}
