//! What a Kubernetes API server checks before it accepts a CustomResourceDefinition, applied
//! to the YAML we ship (crds/, the chart's rendered templates, charts/install.yaml).
//!
//! The operator's tests mock the API server, so they prove nothing about whether a real one
//! takes our CRD; once it did not (a default that failed its own schema, a CEL `fieldPath`
//! outside the schema) and no user could install Beehive. These checks follow
//! k8s.io/apiextensions-apiserver: `ValidateCustomResourceDefinition` (names, versions,
//! printer columns), the structural-schema invariants (`schema/validation.go`), the OpenAPI
//! rules of `ValidateCustomResourceDefinitionOpenAPISchema` (forbidden keywords, the
//! `x-kubernetes-*` extensions and where they may stand, metadata restrictions,
//! `x-kubernetes-validations` rules, messages, reasons and field paths), and default
//! validation (`schema/defaulting/validation.go`: every default is pruned, passes the
//! OpenAPI schema and the CEL rules it sits under). Two checks go further than the API
//! server, because they describe what users' objects will meet: a default must also pass
//! after its children's defaults are applied, and every string, list and map a CEL rule
//! reads must be bounded so its estimated cost stays predictable.
//!
//! They read the generated YAML, never the Rust types that produced it.

use std::collections::BTreeSet;
use std::fmt;

use kube::core::cel::{
    ScopeContext, Validator, WarningKind, analyze_rule, apply_defaults, compile_schema,
};
use serde_json::{Map, Value};

/// One thing the API server would refuse, with its path in the CRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where, in the API server's notation
    /// (`spec.versions[0].schema.openAPIV3Schema.properties[spec].default`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A manifest file that cannot be read as YAML.
#[derive(Debug, thiserror::Error)]
#[error("not a YAML stream: {0}")]
pub struct ParseError(String);

/// The result of checking a YAML stream.
#[derive(Debug, Default)]
pub struct Report {
    /// CustomResourceDefinitions found in the stream.
    pub crds: Vec<String>,
    /// Everything the API server would refuse in them.
    pub findings: Vec<Finding>,
}

/// Checks every CustomResourceDefinition in a YAML stream (other kinds are skipped).
pub fn check_manifests(yaml: &str) -> Result<Report, ParseError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| ParseError(e.to_string()))?;
    let mut report = Report::default();
    for doc in docs {
        if doc.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or("<unnamed>");
        report.crds.push(name.to_string());
        report
            .findings
            .extend(check_crd(&doc).into_iter().map(|f| Finding {
                path: format!("{name}: {}", f.path),
                message: f.message,
            }));
    }
    Ok(report)
}

const RULE_COST_LIMIT_NOTE: &str = "try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared";

/// The reasons `x-kubernetes-validations` may name.
const REASONS: &[&str] = &[
    "FieldValueInvalid",
    "FieldValueForbidden",
    "FieldValueRequired",
    "FieldValueDuplicate",
];

/// Every key of apiextensions/v1 JSONSchemaProps; anything else is an unknown field, which a
/// server-side apply with strict field validation refuses.
const SCHEMA_KEYS: &[&str] = &[
    "id",
    "$schema",
    "$ref",
    "description",
    "type",
    "format",
    "title",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "properties",
    "additionalProperties",
    "patternProperties",
    "dependencies",
    "additionalItems",
    "definitions",
    "externalDocs",
    "example",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];

/// What the root schema may carry (`allowedFieldsAtRootSchema`).
const ROOT_KEYS: &[&str] = &[
    "description",
    "type",
    "format",
    "title",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "required",
    "items",
    "properties",
    "externalDocs",
    "example",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
];

const TYPES: &[&str] = &["array", "boolean", "integer", "number", "object", "string"];

/// Checks one CustomResourceDefinition (as JSON) the way the API server does.
pub fn check_crd(crd: &Value) -> Vec<Finding> {
    let mut out = Findings::default();
    if crd["apiVersion"] != "apiextensions.k8s.io/v1" {
        out.push("apiVersion", "must be apiextensions.k8s.io/v1");
    }
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let plural = spec["names"]["plural"].as_str().unwrap_or_default();
    if crd["metadata"]["name"].as_str() != Some(&format!("{plural}.{group}")) {
        out.push(
            "metadata.name",
            format!("must be spec.names.plural+\".\"+spec.group ({plural}.{group})"),
        );
    }
    if group.is_empty() || !group.contains('.') || !is_dns_subdomain(group) {
        out.push("spec.group", "should be a domain with at least one dot");
    }
    check_names(&spec["names"], &mut out);
    match spec["scope"].as_str() {
        Some("Namespaced" | "Cluster") => {}
        _ => out.push("spec.scope", "must be Namespaced or Cluster"),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        out.push(
            "spec.versions",
            "must have exactly one version marked as storage version",
        );
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if storage != 1 {
        out.push(
            "spec.versions",
            "must have exactly one version marked as storage version",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, version) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = version["name"].as_str().unwrap_or_default();
        if !is_dns_label(name) || name.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(format!("{path}.name"), "must be a DNS-1035 label");
        }
        if !seen.insert(name.to_string()) {
            out.push(format!("{path}.name"), "must be unique");
        }
        check_printer_columns(version, &path, &mut out);
        match version["schema"].get("openAPIV3Schema") {
            Some(schema) => {
                check_schema_root(schema, &format!("{path}.schema.openAPIV3Schema"), &mut out)
            }
            None => out.push(
                format!("{path}.schema.openAPIV3Schema"),
                "Required value: schemas are required",
            ),
        }
        if let Some(sub) = version.get("subresources") {
            for key in sub
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_else(Vec::new)
            {
                if key != "status" && key != "scale" {
                    out.push(format!("{path}.subresources.{key}"), "unknown field");
                }
            }
        }
    }
    out.0
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Finding {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn check_names(names: &Value, out: &mut Findings) {
    for key in ["plural", "singular"] {
        let v = names[key].as_str().unwrap_or_default();
        if !is_dns_label(v) {
            out.push(
                format!("spec.names.{key}"),
                "must be a lowercase DNS-1035 label",
            );
        }
    }
    let kind = names["kind"].as_str().unwrap_or_default();
    if kind.is_empty() || !kind.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.push("spec.names.kind", "Required value");
    }
    for (i, short) in names["shortNames"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !short.as_str().is_some_and(is_dns_label) {
            out.push(
                format!("spec.names.shortNames[{i}]"),
                "must be a lowercase DNS-1035 label",
            );
        }
    }
    for (i, cat) in names["categories"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !cat.as_str().is_some_and(is_dns_label) {
            out.push(
                format!("spec.names.categories[{i}]"),
                "must be a lowercase DNS-1035 label",
            );
        }
    }
}

fn check_printer_columns(version: &Value, path: &str, out: &mut Findings) {
    let mut names = BTreeSet::new();
    for (i, col) in version["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let p = format!("{path}.additionalPrinterColumns[{i}]");
        if !names.insert(col["name"].as_str().unwrap_or_default().to_string()) {
            out.push(format!("{p}.name"), "Duplicate value");
        }
        match col["type"].as_str() {
            Some("integer" | "number" | "string" | "boolean" | "date") => {}
            _ => out.push(
                format!("{p}.type"),
                "must be integer, number, string, boolean or date",
            ),
        }
        if !col["jsonPath"].as_str().is_some_and(|j| j.starts_with('.')) {
            out.push(
                format!("{p}.jsonPath"),
                "must be a simple json path starting with .",
            );
        }
    }
}

/// Where in the schema a node stands, as far as the rules care.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Item,
    Field,
}

#[derive(Clone)]
struct Context {
    level: Level,
    /// Under the root's `metadata`, `kind` or `apiVersion`.
    inside_meta: bool,
    /// Why a default is not allowed here, if it is not.
    defaults_forbidden: Option<String>,
    /// The list or map above this node that makes `oldSelf` uncorrelatable, if any.
    uncorrelatable: Option<String>,
    /// How many times a rule at this node may run per object (the product of the bounds of
    /// the lists and maps above it); `None` when one of them is unbounded.
    cardinality: Option<u64>,
}

fn check_schema_root(schema: &Value, path: &str, out: &mut Findings) {
    let Some(obj) = schema.as_object() else {
        out.push(path, "must be an object");
        return;
    };
    for key in obj.keys() {
        if !ROOT_KEYS.contains(&key.as_str()) && SCHEMA_KEYS.contains(&key.as_str()) {
            out.push(
                format!("{path}.{key}"),
                "Forbidden: must not be used at the root",
            );
        }
    }
    if obj.get("type").and_then(Value::as_str) != Some("object") {
        out.push(format!("{path}.type"), "must be object at the root");
    }
    let ctx = Context {
        level: Level::Root,
        inside_meta: false,
        defaults_forbidden: Some("at the root".into()),
        uncorrelatable: None,
        cardinality: Some(1),
    };
    check_node(schema, path, &ctx, out);
    check_cel(schema, path, out);
}

fn check_node(node: &Value, path: &str, ctx: &Context, out: &mut Findings) {
    let Some(obj) = node.as_object() else {
        out.push(path, "must be a schema object");
        return;
    };
    for key in obj.keys() {
        if !SCHEMA_KEYS.contains(&key.as_str()) {
            out.push(format!("{path}.{key}"), "unknown field");
        }
    }
    for key in [
        "id",
        "$ref",
        "additionalItems",
        "patternProperties",
        "definitions",
        "dependencies",
    ] {
        if obj.contains_key(key) {
            out.push(
                format!("{path}.{key}"),
                format!("Forbidden: {key} is not supported"),
            );
        }
    }
    if obj.get("uniqueItems") == Some(&Value::Bool(true)) {
        out.push(
            format!("{path}.uniqueItems"),
            "Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        );
    }
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or_default();
    let flag = |k: &str| obj.get(k) == Some(&Value::Bool(true));
    let int_or_string = flag("x-kubernetes-int-or-string");
    let preserve = flag("x-kubernetes-preserve-unknown-fields");
    let embedded = flag("x-kubernetes-embedded-resource");
    if ty == "null" {
        out.push(
            format!("{path}.type"),
            "Forbidden: type cannot be set to null, use nullable as an alternative",
        );
    } else if !ty.is_empty() && !TYPES.contains(&ty) {
        out.push(format!("{path}.type"), format!("Unsupported value: {ty:?}"));
    }
    if ty.is_empty() && !int_or_string && !preserve && !embedded {
        let msg = match ctx.level {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        out.push(format!("{path}.type"), format!("Required value: {msg}"));
    }
    if ty == "array" && !obj.contains_key("items") {
        out.push(format!("{path}.items"), "Required value: must be specified");
    }
    if obj.get("items").is_some_and(Value::is_array) {
        out.push(
            format!("{path}.items"),
            "Forbidden: items must be a schema object and not an array",
        );
    }
    if obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        out.push(
            format!("{path}.x-kubernetes-preserve-unknown-fields"),
            "Invalid value: false: must be true or undefined",
        );
    }
    if int_or_string && preserve {
        out.push(
            format!("{path}.x-kubernetes-preserve-unknown-fields"),
            "must be false if x-kubernetes-int-or-string is true",
        );
    }
    if int_or_string && embedded {
        out.push(
            format!("{path}.x-kubernetes-embedded-resource"),
            "must be false if x-kubernetes-int-or-string is true",
        );
    }
    if embedded {
        if ty != "object" {
            out.push(
                format!("{path}.type"),
                "must be object if x-kubernetes-embedded-resource is true",
            );
        }
        if ctx.inside_meta {
            out.push(
                format!("{path}.x-kubernetes-embedded-resource"),
                "Forbidden: must not be used inside of resource meta",
            );
        }
        if !preserve
            && obj
                .get("properties")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty)
        {
            out.push(
                format!("{path}.properties"),
                "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
            );
        }
    }
    check_map_and_list_types(obj, ty, path, out);

    let properties = obj.get("properties").and_then(Value::as_object);
    let additional = obj.get("additionalProperties");
    if let Some(additional) = additional {
        if ctx.level == Level::Root {
            out.push(
                format!("{path}.additionalProperties"),
                "Forbidden: must not be used at the root",
            );
        }
        if properties.is_some_and(|p| !p.is_empty()) && additional != &Value::Bool(true) {
            out.push(
                format!("{path}.additionalProperties"),
                "Forbidden: additionalProperties and properties are mutual exclusive",
            );
        }
    }

    // Metadata at the root may only restrict name and generateName; kind and apiVersion
    // must be strings.
    if (ctx.level == Level::Root || embedded)
        && let Some(props) = properties
    {
        for key in ["kind", "apiVersion"] {
            if let Some(p) = props.get(key)
                && p.get("type").and_then(Value::as_str) != Some("string")
            {
                out.push(format!("{path}.properties[{key}].type"), "must be string");
            }
        }
        if let Some(meta) = props.get("metadata") {
            check_metadata(
                meta,
                &format!("{path}.properties[metadata]"),
                ctx.level,
                out,
            );
        }
    }

    if let Some(rules) = obj.get("x-kubernetes-validations") {
        check_rules(rules, node, path, ctx, out);
    }

    if let Some(default) = obj.get("default") {
        match &ctx.defaults_forbidden {
            Some(reason) => out.push(
                format!("{path}.default"),
                format!("Forbidden: must not be set {reason}"),
            ),
            None => check_default(default, node, path, out),
        }
    }

    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, branch) in obj
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let skip_int_or_string =
                key == "anyOf" && int_or_string && is_int_or_string_pattern(obj.get("anyOf"));
            if !skip_int_or_string {
                check_value_validation(branch, node, &format!("{path}.{key}[{i}]"), out);
            }
        }
    }
    if let Some(not) = obj.get("not") {
        check_value_validation(not, node, &format!("{path}.not"), out);
    }

    let map_correlatable = !matches!(
        obj.get("x-kubernetes-map-type").and_then(Value::as_str),
        Some("atomic")
    );
    if let Some(props) = properties {
        for (name, child) in props {
            let mut sub = ctx.clone();
            sub.level = Level::Field;
            if !map_correlatable && sub.uncorrelatable.is_none() {
                sub.uncorrelatable = Some(path.to_string());
            }
            if (ctx.level == Level::Root || embedded)
                && ["metadata", "kind", "apiVersion"].contains(&name.as_str())
            {
                sub.inside_meta = true;
                if ctx.level == Level::Root {
                    sub.defaults_forbidden = Some(format!("in top-level {name}"));
                }
            } else if ctx.level == Level::Root {
                sub.defaults_forbidden = None;
            }
            check_node(child, &format!("{path}.properties[{name}]"), &sub, out);
        }
    }
    if let Some(additional) = additional.filter(|a| a.is_object()) {
        let mut sub = ctx.clone();
        sub.level = Level::Field;
        if ctx.inside_meta {
            sub.defaults_forbidden =
                Some("inside additionalProperties applying to object metadata".into());
        }
        sub.cardinality = bounded(ctx.cardinality, obj.get("maxProperties"));
        check_node(
            additional,
            &format!("{path}.additionalProperties"),
            &sub,
            out,
        );
    }
    if let Some(items) = obj.get("items").filter(|i| i.is_object()) {
        let mut sub = ctx.clone();
        sub.level = Level::Item;
        if obj.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map")
            && sub.uncorrelatable.is_none()
        {
            sub.uncorrelatable = Some(path.to_string());
        }
        sub.cardinality = bounded(ctx.cardinality, obj.get("maxItems"));
        check_node(items, &format!("{path}.items"), &sub, out);
    }
}

fn bounded(cardinality: Option<u64>, bound: Option<&Value>) -> Option<u64> {
    Some(cardinality?.saturating_mul(bound?.as_u64()?))
}

fn is_int_or_string_pattern(any_of: Option<&Value>) -> bool {
    any_of == Some(&serde_json::json!([{"type": "integer"}, {"type": "string"}]))
}

fn check_metadata(meta: &Value, path: &str, level: Level, out: &mut Findings) {
    if meta
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "object")
    {
        out.push(format!("{path}.type"), "must be object");
    }
    if level != Level::Root {
        return;
    }
    let allowed = |k: &str| k == "type" || k == "properties";
    let extra_keys = meta
        .as_object()
        .into_iter()
        .flatten()
        .any(|(k, _)| !allowed(k));
    let extra_props = meta["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .any(|(k, _)| k != "name" && k != "generateName");
    if extra_keys || extra_props {
        out.push(
            path,
            "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified",
        );
    }
}

fn check_map_and_list_types(obj: &Map<String, Value>, ty: &str, path: &str, out: &mut Findings) {
    if let Some(map_type) = obj.get("x-kubernetes-map-type") {
        if ty != "object" {
            out.push(
                format!("{path}.type"),
                "must be object if x-kubernetes-map-type is specified",
            );
        }
        if !matches!(map_type.as_str(), Some("atomic" | "granular")) {
            out.push(
                format!("{path}.x-kubernetes-map-type"),
                "Unsupported value: supported values: \"atomic\", \"granular\"",
            );
        }
    }
    let list_type = obj
        .get("x-kubernetes-list-type")
        .map(|v| v.as_str().unwrap_or("?"));
    if let Some(list_type) = list_type {
        if ty != "array" {
            out.push(
                format!("{path}.type"),
                "must be array if x-kubernetes-list-type is specified",
            );
        }
        if !["atomic", "set", "map"].contains(&list_type) {
            out.push(
                format!("{path}.x-kubernetes-list-type"),
                "Unsupported value: supported values: \"atomic\", \"map\", \"set\"",
            );
        }
    }
    let keys: Vec<&str> = obj
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !keys.is_empty() && list_type != Some("map") {
        out.push(
            format!("{path}.x-kubernetes-list-type"),
            "must be map if x-kubernetes-list-map-keys is non-empty",
        );
    }
    let items = obj.get("items").unwrap_or(&Value::Null);
    if matches!(list_type, Some("set" | "map")) && items["nullable"] == true {
        out.push(
            format!("{path}.items.nullable"),
            format!(
                "Forbidden: cannot be nullable when x-kubernetes-list-type is {}",
                list_type.unwrap_or_default()
            ),
        );
    }
    if list_type == Some("set") {
        match items["type"].as_str() {
            Some("array")
                if items["x-kubernetes-list-type"]
                    .as_str()
                    .is_some_and(|t| t != "atomic") =>
            {
                out.push(
                    format!("{path}.items.x-kubernetes-list-type"),
                    "must be atomic as item of a list with x-kubernetes-list-type=set",
                )
            }
            Some("object") if items["x-kubernetes-map-type"] != "atomic" => out.push(
                format!("{path}.items.x-kubernetes-map-type"),
                "must be atomic as item of a list with x-kubernetes-list-type=set",
            ),
            _ => {}
        }
    }
    if list_type == Some("map") {
        if keys.is_empty() {
            out.push(
                format!("{path}.x-kubernetes-list-map-keys"),
                "Required value: must not be empty if x-kubernetes-list-type is map",
            );
        }
        if items["type"] != "object" {
            out.push(
                format!("{path}.items.type"),
                "must be object if parent array's x-kubernetes-list-type is map",
            );
        }
        let required: Vec<&str> = items["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut seen = BTreeSet::new();
        for key in keys {
            if !seen.insert(key) {
                out.push(
                    format!("{path}.x-kubernetes-list-map-keys"),
                    "must not contain duplicate entries",
                );
            }
            let Some(prop) = items["properties"].get(key) else {
                out.push(
                    format!("{path}.x-kubernetes-list-map-keys"),
                    "entries must all be names of item properties",
                );
                continue;
            };
            if matches!(prop["type"].as_str(), Some("array" | "object")) {
                out.push(
                    format!("{path}.items.properties[{key}].type"),
                    "must be a scalar type if parent array's x-kubernetes-list-type is map",
                );
            }
            if !required.contains(&key) && prop.get("default").is_none() {
                out.push(
                    format!("{path}.items.properties[{key}].default"),
                    "Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                );
            }
            if prop["nullable"] == true {
                out.push(
                    format!("{path}.items.properties[{key}].nullable"),
                    "Forbidden: this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                );
            }
        }
    }
}

/// allOf/anyOf/oneOf/not: value validations only. They may not declare structure (type,
/// defaults, descriptions, extensions) and may only name fields the structural schema has.
fn check_value_validation(v: &Value, structural: &Value, path: &str, out: &mut Findings) {
    let Some(obj) = v.as_object() else {
        out.push(path, "must be a schema object");
        return;
    };
    for (key, msg) in [
        ("type", "must be empty to be structural"),
        ("default", "must be undefined to be structural"),
        ("title", "must be empty to be structural"),
        ("description", "must be empty to be structural"),
        ("nullable", "must be false to be structural"),
        ("externalDocs", "must be undefined to be structural"),
        ("additionalProperties", "must be undefined to be structural"),
        (
            "x-kubernetes-preserve-unknown-fields",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-embedded-resource",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-int-or-string",
            "must be false to be structural",
        ),
        (
            "x-kubernetes-list-map-keys",
            "must be empty to be structural",
        ),
        (
            "x-kubernetes-list-type",
            "must be undefined to be structural",
        ),
        (
            "x-kubernetes-map-type",
            "must be undefined to be structural",
        ),
    ] {
        let set = match obj.get(key) {
            None | Some(Value::Bool(false)) | Some(Value::Null) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if set {
            out.push(format!("{path}.{key}"), format!("Forbidden: {msg}"));
        }
    }
    // Only allOf may carry CEL rules (and only when nested validations are allowed, which
    // CRDs do not allow).
    if obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty())
    {
        out.push(
            format!("{path}.x-kubernetes-validations"),
            "Forbidden: must be empty to be structural",
        );
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            if name == "metadata" {
                out.push(
                    format!("{path}.properties[metadata]"),
                    "Forbidden: must not be specified in a nested context",
                );
            }
            match structural["properties"].get(name) {
                Some(s) => check_value_validation(sub, s, &format!("{path}.properties[{name}]"), out),
                None => out.push(
                    format!("{path}.properties[{name}]"),
                    "Required value: because it is not specified in the structural part of the schema",
                ),
            }
        }
    }
    if let Some(items) = obj.get("items") {
        match structural.get("items") {
            Some(s) => check_value_validation(items, s, &format!("{path}.items"), out),
            None => out.push(
                format!("{path}.items"),
                "Required value: because it is not specified in the structural part of the schema",
            ),
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, b) in obj
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            check_value_validation(b, structural, &format!("{path}.{key}[{i}]"), out);
        }
    }
    if let Some(not) = obj.get("not") {
        check_value_validation(not, structural, &format!("{path}.not"), out);
    }
}

/// The static checks of `x-kubernetes-validations` entries (compilation and cost are
/// checked over the whole tree in [`check_cel`]).
fn check_rules(rules: &Value, node: &Value, path: &str, ctx: &Context, out: &mut Findings) {
    let Some(rules) = rules.as_array() else {
        out.push(format!("{path}.x-kubernetes-validations"), "must be a list");
        return;
    };
    for (i, rule) in rules.iter().enumerate() {
        let p = format!("{path}.x-kubernetes-validations[{i}]");
        let text = rule["rule"].as_str().unwrap_or_default();
        let trimmed = text.trim();
        let message = rule.get("message").and_then(Value::as_str);
        if trimmed.is_empty() {
            out.push(format!("{p}.rule"), "Required value: rule is not specified");
        } else if message.is_some_and(|m| !m.is_empty() && m.trim().is_empty()) {
            out.push(
                format!("{p}.message"),
                "message must be non-empty if specified",
            );
        } else if message.is_some_and(|m| m.trim().contains(['\n', '\r'])) {
            out.push(
                format!("{p}.message"),
                "message must not contain line breaks",
            );
        } else if trimmed.contains(['\n', '\r']) && message.is_none_or(|m| m.trim().is_empty()) {
            out.push(
                format!("{p}.message"),
                "Required value: message must be specified if rule contains line breaks",
            );
        }
        if let Some(expr) = rule.get("messageExpression").and_then(Value::as_str)
            && expr.trim().is_empty()
        {
            out.push(
                format!("{p}.messageExpression"),
                "Required value: messageExpression must be non-empty if specified",
            );
        }
        if let Some(reason) = rule.get("reason")
            && !reason.as_str().is_some_and(|r| REASONS.contains(&r))
        {
            out.push(
                format!("{p}.reason"),
                format!("Unsupported value: {reason}: supported values: {REASONS:?}"),
            );
        }
        if let Some(field_path) = rule.get("fieldPath").and_then(Value::as_str) {
            if field_path.trim().is_empty() {
                out.push(
                    format!("{p}.fieldPath"),
                    "fieldPath must be non-empty if specified",
                );
            } else if field_path.contains(['\n', '\r']) {
                out.push(
                    format!("{p}.fieldPath"),
                    "fieldPath must not contain line breaks",
                );
            } else if let Err(e) = resolve_field_path(field_path, node) {
                out.push(
                    format!("{p}.fieldPath"),
                    format!("Invalid value: {field_path:?}: fieldPath must be a valid path: {e}"),
                );
            }
        }
        if uses_old_self(text) {
            if let Some(list) = &ctx.uncorrelatable {
                out.push(
                    format!("{p}.rule"),
                    format!("oldSelf cannot be used on the uncorrelatable portion of the schema within {list}"),
                );
            }
        } else if rule.get("optionalOldSelf").is_some() {
            out.push(
                format!("{p}.optionalOldSelf"),
                "may not be set if oldSelf is not used in rule",
            );
        }
        if ctx.cardinality.is_none() {
            // The API server multiplies the rule's cost by how often it may run, which for
            // an unbounded list or map above it is derived from the 3 MiB request limit.
            out.push(
                format!("{p}.rule"),
                format!("Forbidden: the rule runs once per element of an unbounded list or map above it: {RULE_COST_LIMIT_NOTE}"),
            );
        }
        // Every string, list and map the rule reads must be bounded, or the estimated cost
        // is computed for the largest object the API server admits (3 MiB).
        for field in touched_fields(text) {
            if let Some((where_, target)) = resolve_touched(node, &field)
                && let Some(missing) = missing_bound(target)
            {
                out.push(
                    format!("{p}.rule"),
                    format!("the rule reads {where_}, a {missing}: {RULE_COST_LIMIT_NOTE}"),
                );
            }
        }
    }
}

fn uses_old_self(rule: &str) -> bool {
    let bytes = rule.as_bytes();
    rule.match_indices("oldSelf").any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + "oldSelf".len()).copied();
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The `self.a.b` / `oldSelf.a.b` chains a rule reads, as field names.
fn touched_fields(rule: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = rule.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    for start in ["self", "oldSelf"] {
        for (i, _) in rule.match_indices(start) {
            if i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b'.') {
                continue;
            }
            let mut j = i + start.len();
            if bytes.get(j).is_some_and(|b| ident(*b)) {
                continue;
            }
            let mut chain = Vec::new();
            while bytes.get(j) == Some(&b'.') {
                let s = j + 1;
                let mut e = s;
                while bytes.get(e).is_some_and(|b| ident(*b)) {
                    e += 1;
                }
                if e == s {
                    break;
                }
                chain.push(rule[s..e].to_string());
                j = e;
            }
            out.push(chain);
        }
    }
    out
}

/// Follows a field chain through `properties` (the root's implicit `metadata.name` and
/// `generateName` included), returning the node it ends on and a readable path.
fn resolve_touched<'a>(node: &'a Value, chain: &[String]) -> Option<(String, &'a Value)> {
    static IMPLICIT_NAME: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| serde_json::json!({"type": "string", "maxLength": 253}));
    let mut current = node;
    let mut shown = String::from("self");
    for (i, field) in chain.iter().enumerate() {
        shown.push('.');
        shown.push_str(field);
        if field == "metadata"
            && current
                .get("properties")
                .and_then(|p| p.get("metadata"))
                .is_none()
        {
            // ObjectMeta: name and generateName are limited by the API server itself.
            return chain
                .get(i + 1)
                .filter(|n| *n == "name" || *n == "generateName")
                .map(|n| (format!("{shown}.{n}"), &*IMPLICIT_NAME));
        }
        current = current.get("properties")?.get(field)?;
    }
    Some((shown, current))
}

fn missing_bound(node: &Value) -> Option<&'static str> {
    let has = |k: &str| node.get(k).is_some();
    match node.get("type").and_then(Value::as_str) {
        Some("string") if !has("maxLength") && !has("enum") => Some("string without maxLength"),
        Some("array") if !has("maxItems") => Some("list without maxItems"),
        Some("object") if has("additionalProperties") && !has("maxProperties") => {
            Some("map without maxProperties")
        }
        _ => None,
    }
}

/// `cel.ValidFieldPath`: `.field` and `['field']` steps through properties (and map keys
/// through additionalProperties), relative to the node the rule is declared on.
fn resolve_field_path(path: &str, node: &Value) -> Result<(), String> {
    let mut rest = path;
    let mut current = node;
    if rest.is_empty() {
        return Err("empty".into());
    }
    while !rest.is_empty() {
        let (name, tail) = if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            (r[..end].to_string(), &r[end..])
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").ok_or_else(|| "expected ']".to_string())?;
            (r[..end].to_string(), &r[end + 2..])
        } else if let Some(r) = rest.strip_prefix('[') {
            return Err(format!(
                "expected single quoted string but got {}",
                r.split(']').next().unwrap_or(r)
            ));
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        };
        if name.is_empty() {
            return Err("expected a field name".into());
        }
        current = match current.get("properties").and_then(|p| p.get(&name)) {
            Some(child) => child,
            None => match current
                .get("additionalProperties")
                .filter(|a| a.is_object())
            {
                Some(values) => values,
                None => return Err("does not refer to a valid field".into()),
            },
        };
        rest = tail;
    }
    Ok(())
}

/// Checks an object against the openAPIV3Schema of a CRD version as the API server does
/// with strict field validation (`kubectl apply --validate=strict`, server-side apply's
/// default): a field the schema does not know (outside `x-kubernetes-preserve-unknown-fields`
/// and `metadata`, which the API server validates itself) is refused, then the OpenAPI
/// keywords (types, enums, bounds, patterns, required) are checked.
pub fn validate_object(object: &Value, schema: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    unknown_fields(object, schema, "", &mut out);
    validate_value(object, schema, "<root>", &mut out);
    out
}

fn unknown_fields(value: &Value, schema: &Value, path: &str, out: &mut Vec<Finding>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if path.is_empty() && k == "metadata" {
                    continue;
                }
                if let Some(s) = props.and_then(|props| props.get(k)) {
                    unknown_fields(v, s, &p, out);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    unknown_fields(v, a, &p, out);
                } else if additional != Some(&Value::Bool(true)) {
                    out.push(Finding {
                        path: p,
                        message: "unknown field".into(),
                    });
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown_fields(item, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// A default must survive pruning, pass the schema it sits in (OpenAPI keywords and the CEL
/// rules of that subtree), and pass again once its children's defaults are applied (what a
/// user's object gets).
fn check_default(default: &Value, node: &Value, path: &str, out: &mut Findings) {
    let p = format!("{path}.default");
    if default.is_null() && node["nullable"] != true {
        out.push(
            &p,
            "Invalid value: null: must not be null unless nullable is true",
        );
        return;
    }
    let mut pruned = default.clone();
    prune(&mut pruned, node);
    if &pruned != default {
        out.push(
            &p,
            format!("Invalid value: {default}: must not have unknown fields"),
        );
    }
    let mut errors = Vec::new();
    validate_value(default, node, &p, &mut errors);
    if errors.is_empty() {
        let defaulted = apply_defaults(node, default);
        if &defaulted != default {
            let mut after = Vec::new();
            validate_value(&defaulted, node, &p, &mut after);
            errors.extend(after.into_iter().map(|f| Finding {
                message: format!(
                    "{} (once the default's own fields are defaulted)",
                    f.message
                ),
                ..f
            }));
        }
        if errors.is_empty()
            && let Err(cel) = Validator::new().validate(node, default, Some(default))
        {
            for e in cel.iter() {
                errors.push(Finding {
                    path: p.clone(),
                    message: format!("Invalid value: {default}: {e}"),
                });
            }
        }
    }
    out.0.extend(errors);
}

/// Drops the fields the API server would prune: unknown ones, outside
/// `x-kubernetes-preserve-unknown-fields`.
fn prune(value: &mut Value, schema: &Value) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let embedded = schema["x-kubernetes-embedded-resource"] == true;
            map.retain(|k, _| {
                props.is_some_and(|p| p.contains_key(k))
                    || additional.is_some_and(|a| a != &Value::Bool(false))
                    || (embedded && ["apiVersion", "kind", "metadata"].contains(&k.as_str()))
            });
            for (k, v) in map.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    prune(v, s);
                } else if let Some(s) = additional.filter(|a| a.is_object()) {
                    prune(v, s);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    prune(item, s);
                }
            }
        }
        _ => {}
    }
}

fn json_type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => true,
    }
}

/// The OpenAPI v3 keywords the API server's schema validator applies to a value.
fn validate_value(value: &Value, schema: &Value, path: &str, out: &mut Vec<Finding>) {
    let invalid = |out: &mut Vec<Finding>, msg: String| {
        out.push(Finding {
            path: path.to_string(),
            message: format!("Invalid value: {value}: {msg}"),
        })
    };
    let name = path.rsplit(['.', ' ']).next().unwrap_or(path);
    if value.is_null() {
        if schema["nullable"] != true && schema.get("type").is_some() {
            invalid(
                out,
                format!(
                    "{name} in body must be of type {}: \"null\"",
                    schema["type"].as_str().unwrap_or("?")
                ),
            );
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            invalid(
                out,
                format!("{name} in body must be of type integer or string"),
            );
            return;
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str)
        && !json_type_matches(ty, value)
    {
        invalid(out, format!("{name} in body must be of type {ty}"));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        invalid(
            out,
            format!(
                "{name} in body should be one of {}",
                Value::Array(options.clone())
            ),
        );
    }
    match value {
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64()
                && chars < min
            {
                invalid(
                    out,
                    format!("{name} in body should be at least {min} chars long"),
                );
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && chars > max
            {
                invalid(
                    out,
                    format!("{name} in body should be at most {max} chars long"),
                );
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => {
                        invalid(out, format!("{name} in body should match '{pattern}'"))
                    }
                    Ok(_) => {}
                    Err(e) => invalid(
                        out,
                        format!("pattern is not a valid regular expression: {e}"),
                    ),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let excl = |k: &str| schema[k] == true;
            if let Some(min) = schema["minimum"].as_f64()
                && (x < min || (excl("exclusiveMinimum") && x == min))
            {
                invalid(
                    out,
                    format!("{name} in body should be greater than or equal to {min}"),
                );
            }
            if let Some(max) = schema["maximum"].as_f64()
                && (x > max || (excl("exclusiveMaximum") && x == max))
            {
                invalid(
                    out,
                    format!("{name} in body should be less than or equal to {max}"),
                );
            }
            if let Some(m) = schema["multipleOf"].as_f64()
                && m > 0.0
                && (x / m).fract() != 0.0
            {
                invalid(out, format!("{name} in body should be a multiple of {m}"));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if schema["minItems"].as_u64().is_some_and(|min| n < min) {
                invalid(
                    out,
                    format!(
                        "{name} in body should have at least {} items",
                        schema["minItems"]
                    ),
                );
            }
            if schema["maxItems"].as_u64().is_some_and(|max| n > max) {
                invalid(
                    out,
                    format!(
                        "{name} in body should have at most {} items",
                        schema["maxItems"]
                    ),
                );
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate_value(item, item_schema, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            let n = map.len() as u64;
            if schema["minProperties"].as_u64().is_some_and(|min| n < min) {
                invalid(
                    out,
                    format!(
                        "{name} in body should have at least {} properties",
                        schema["minProperties"]
                    ),
                );
            }
            if schema["maxProperties"].as_u64().is_some_and(|max| n > max) {
                invalid(
                    out,
                    format!(
                        "{name} in body should have at most {} properties",
                        schema["maxProperties"]
                    ),
                );
            }
            for required in schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    out.push(Finding {
                        path: format!("{path}.{required}"),
                        message: "Required value".into(),
                    });
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, v) in map {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    validate_value(v, s, &format!("{path}.{k}"), out);
                } else if let Some(s) = schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    validate_value(v, s, &format!("{path}.{k}"), out);
                }
            }
        }
        _ => {}
    }
    for branch in schema["allOf"].as_array().into_iter().flatten() {
        validate_value(value, branch, path, out);
    }
    let passes = |b: &Value| {
        let mut e = Vec::new();
        validate_value(value, b, path, &mut e);
        e.is_empty()
    };
    if let Some(any) = schema["anyOf"].as_array()
        && !any.iter().any(passes)
    {
        invalid(
            out,
            format!("{name} in body must match at least one schema in anyOf"),
        );
    }
    if let Some(one) = schema["oneOf"].as_array()
        && one.iter().filter(|b| passes(b)).count() != 1
    {
        invalid(
            out,
            format!("{name} in body must match exactly one schema in oneOf"),
        );
    }
    if let Some(not) = schema.get("not")
        && passes(not)
    {
        invalid(
            out,
            format!("{name} in body must not validate the schema (not)"),
        );
    }
}

/// Every rule compiles against the node it is declared on and its estimated cost stays
/// inside the API server's per-rule budget.
fn check_cel(root: &Value, path: &str, out: &mut Findings) {
    let compiled = compile_schema(root);
    fn walk(
        schema: &Value,
        compiled: &kube::core::cel::CompiledSchema,
        path: &str,
        out: &mut Findings,
    ) {
        for (i, result) in compiled.validations.iter().enumerate() {
            let p = format!("{path}.x-kubernetes-validations[{i}].rule");
            match result {
                Err(e) => out.push(&p, format!("Invalid value: compilation failed: {e}")),
                Ok(_) => {
                    let rule = schema["x-kubernetes-validations"][i]["rule"]
                        .as_str()
                        .unwrap_or_default();
                    for w in analyze_rule(rule, compiled, ScopeContext::CrdValidation) {
                        if matches!(w.kind, WarningKind::CostExceeded | WarningKind::WrongScope) {
                            out.push(&p, format!("Forbidden: {}", w.message));
                        }
                    }
                }
            }
        }
        for (name, child) in &compiled.properties {
            walk(
                &schema["properties"][name],
                child,
                &format!("{path}.properties[{name}]"),
                out,
            );
        }
        if let Some(items) = &compiled.items {
            walk(&schema["items"], items, &format!("{path}.items"), out);
        }
        if let Some(values) = &compiled.additional_properties {
            walk(
                &schema["additionalProperties"],
                values,
                &format!("{path}.additionalProperties"),
                out,
            );
        }
    }
    walk(root, &compiled, path, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths_resolve_through_properties_and_map_keys() {
        let node = json!({"type": "object", "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}}}});
        assert_eq!(resolve_field_path(".a.b", &node), Ok(()));
        assert_eq!(resolve_field_path(".a['b']", &node), Ok(()));
        assert_eq!(resolve_field_path(".labels['x']", &node), Ok(()));
        assert!(resolve_field_path(".metadata.name", &node).is_err());
        assert!(resolve_field_path(".a.c", &node).is_err());
        assert!(resolve_field_path("a", &node).is_err());
        assert!(resolve_field_path(".a[0]", &node).is_err());
    }

    #[test]
    fn old_self_and_touched_fields_are_found() {
        assert!(uses_old_self("!has(oldSelf.x)"));
        assert!(!uses_old_self("self.oldSelfish"));
        assert_eq!(
            touched_fields("self.a.b == oldSelf.c && size(self.metadata.name) < 3"),
            vec![
                vec!["a".to_string(), "b".into()],
                vec!["metadata".to_string(), "name".into()],
                vec!["c".to_string()]
            ]
        );
    }

    #[test]
    fn values_are_checked_with_openapi_keywords() {
        let schema = json!({"type": "object", "required": ["a"], "properties": {
            "a": {"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^[a-z]*$"},
            "n": {"type": "integer", "minimum": 0, "maximum": 5},
            "e": {"type": "string", "enum": ["x", "y"]},
            "l": {"type": "array", "maxItems": 1, "items": {"type": "string"}}}});
        let errors = |v: Value| {
            let mut out = Vec::new();
            validate_value(&v, &schema, "d", &mut out);
            out.into_iter().map(|f| f.to_string()).collect::<Vec<_>>()
        };
        assert!(errors(json!({"a": "ok", "n": 5, "e": "x", "l": ["q"]})).is_empty());
        assert_eq!(errors(json!({})), vec!["d.a: Required value"]);
        for (bad, expected) in [
            (json!({"a": ""}), "at least 1 chars"),
            (json!({"a": "abcd"}), "at most 3 chars"),
            (json!({"a": "A"}), "should match"),
            (json!({"a": "a", "n": 6}), "less than or equal to 5"),
            (json!({"a": "a", "n": "1"}), "must be of type integer"),
            (json!({"a": "a", "e": "z"}), "should be one of"),
            (json!({"a": "a", "l": ["1", "2"]}), "at most 1 items"),
        ] {
            let e = errors(bad.clone());
            assert!(e.len() == 1 && e[0].contains(expected), "{bad}: {e:?}");
        }
    }

    #[test]
    fn pruning_keeps_known_and_preserved_fields_only() {
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "map": {"type": "object", "additionalProperties": {"type": "string"}}}});
        let mut v = json!({"a": {"b": "x", "c": 1}, "free": {"z": 1}, "map": {"k": "v"}, "x": 1});
        prune(&mut v, &schema);
        assert_eq!(
            v,
            json!({"a": {"b": "x"}, "free": {"z": 1}, "map": {"k": "v"}})
        );
    }
}
