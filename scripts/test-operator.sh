#!/usr/bin/env bash
# Checks of the operator's Kubernetes artifacts that need no cluster:
#   - generated files are fresh (crds/, the chart's CRD template, charts/install.yaml)
#   - helm lint and helm template of the chart with default and non-default values
#     (charts/beehive-operator/ci/*.yaml); every rendered object, the CRD and the install
#     manifest validated with kubernetes-validate --strict; RBAC/hardening assertions
#   - examples/ validated against the CRD's openAPIV3Schema (jsonschema), and the objects the
#     operator would create for them (beehive-operator render) with kubernetes-validate
# Installs what it needs from PyPI into a cache (hack/tools.sh). Rust unit/reconcile tests
# run with `cargo test -p beehive-operator`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
K8S_VERSIONS="${K8S_VERSIONS:-1.33.0 1.37.0}"

# shellcheck source=hack/tools.sh
source hack/tools.sh
ensure_venv
ensure_helm
ensure_promtool
PY="$TOOLS_VENV/bin/python"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0
check() {
  local name="$1"
  shift
  if "$@" >"$WORK/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     /' "$WORK/out" | tail -n 40
  fi
}

validate() { # files...: kubernetes-validate --strict against every version in K8S_VERSIONS
  local v out
  for v in $K8S_VERSIONS; do
    out="$(kubernetes-validate --strict --quiet -k "$v" "$@" 2>&1)" || { echo "$out"; return 1; }
    # Unknown kinds are only warned about; the expected ones are the optional custom
    # resources (Prometheus Operator, CloudNativePG, RabbitMQ Cluster Operator, ECK), which
    # operator/tests/external_crds.rs checks against their CRDs instead.
    if echo "$out" | grep -v -E 'ServiceMonitor|PrometheusRule|postgresql\.cnpg\.io|rabbitmq\.com|elasticsearch\.k8s\.elastic\.co' | grep -q .; then echo "$out"; return 1; fi
  done
}

# --- the operator binary (built by cargo test; built here if absent) ---
OPERATOR="${BEEHIVE_OPERATOR_BIN:-}"
if [ -z "$OPERATOR" ]; then
  cargo build -q -p beehive-operator
  OPERATOR="$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/beehive-operator"
fi

# --- generated files are fresh ---
fresh() { # expected-command file
  local file="$1"
  shift
  "$@" >"$WORK/gen"
  diff -u "$file" "$WORK/gen" >/dev/null || { echo "$file is stale: run hack/gen-crds.sh"; diff -u "$file" "$WORK/gen" | head -n 20; return 1; }
}
check "crds/ is fresh" fresh crds/beehive.dev_beehiveclusters.yaml "$OPERATOR" crd
check "chart CRD template is fresh" fresh charts/beehive-operator/templates/crds/beehiveclusters.yaml "$OPERATOR" crd --helm
check "charts/install.yaml is fresh" fresh charts/install.yaml hack/render-install.sh

# --- the CRD ---
check "CRD passes kubernetes-validate --strict" validate crds/beehive.dev_beehiveclusters.yaml
# kubernetes-validate checks the CRD object's own fields only; what a real API server checks
# inside it (structural schema, defaults against their schema, CEL rules and fieldPaths,
# metadata, extensions) is checked by the operator's check-crd (operator/src/crd_validation.rs).
check "crds/ passes the API server's CRD checks (check-crd)" "$OPERATOR" check-crd --expect 1 crds/beehive.dev_beehiveclusters.yaml
crd_checks() {
  "$PY" - "$ROOT/crds/beehive.dev_beehiveclusters.yaml" <<'PYEOF'
import sys, yaml
crd = yaml.safe_load(open(sys.argv[1]))
v = crd["spec"]["versions"][0]
assert crd["spec"]["scope"] == "Namespaced"
assert v["subresources"] == {"status": {}}, v.get("subresources")
cols = [c["name"] for c in v["additionalPrinterColumns"]]
assert cols == ["Ready", "Phase", "Version", "Gateway", "Age"], cols
spec = v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
for comp in ["gateway", "auth", "user", "social", "message", "presence", "search", "file"]:
    p = spec[comp]["properties"]
    for field in ["replicas", "resources", "nodeSelector", "tolerations", "affinity",
                  "topologySpreadConstraints", "podOverrides"]:
        assert field in p, f"spec.{comp}.{field} missing"
PYEOF
}
check "CRD has status, printer columns and per-component settings" crd_checks

# --- the chart ---
CHART=charts/beehive-operator
values_sets=("")
for f in "$CHART"/ci/*.yaml; do values_sets+=("$f"); done
for vf in "${values_sets[@]}"; do
  label="${vf:-defaults}"
  args=()
  [ -n "$vf" ] && args=(-f "$vf")
  out="$WORK/render-$(basename "${vf:-default}" .yaml).yaml"
  check "helm lint ($label)" helm lint --strict "$CHART" "${args[@]}"
  check "helm template ($label)" bash -c "helm template beehive-operator '$CHART' --namespace beehive-system ${args[*]} > '$out'"
  check "rendered chart passes kubernetes-validate --strict ($label)" validate "$out"
  check "rendered chart's CRDs pass the API server's CRD checks ($label)" "$OPERATOR" check-crd "$out"
done
check "the chart renders the CRD by default" "$OPERATOR" check-crd --expect 1 "$WORK/render-default.yaml"
check "helm template rejects a bad rbac.scope" bash -c "! helm template x '$CHART' --set rbac.scope=everything >/dev/null 2>&1"

chart_assertions() {
  "$PY" - "$WORK" <<'PYEOF'
import sys, yaml, os
work = sys.argv[1]
def load(name):
    return [d for d in yaml.safe_load_all(open(os.path.join(work, f"render-{name}.yaml"))) if d]
def kinds(docs): return sorted(d["kind"] for d in docs)

default = load("default")
ns = load("namespace-scope-values")
watch = load("watch-namespace-values")

# CRD with the chart by default (upgraded with helm upgrade, kept on uninstall); not when disabled.
crd = [d for d in default if d["kind"] == "CustomResourceDefinition"]
assert len(crd) == 1 and crd[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
assert not [d for d in ns if d["kind"] == "CustomResourceDefinition"]

# Least privilege: cluster-wide only in cluster scope; namespace scope grants nothing cluster-wide.
assert "ClusterRole" in kinds(default) and "ClusterRoleBinding" in kinds(default)
for docs in (ns, watch):
    assert "ClusterRole" not in kinds(docs) and "ClusterRoleBinding" not in kinds(docs), kinds(docs)
role = [d for d in ns if d["kind"] == "Role" and not d["metadata"]["name"].endswith("leader-election")][0]
assert role["metadata"]["namespace"] == "beehive-system"
wrole = [d for d in watch if d["kind"] == "Role"][0]
assert wrole["metadata"]["namespace"] == "chat"
assert not [d for d in watch if d["kind"] == "Role" and d["metadata"]["name"].endswith("leader-election")]
cr = [d for d in default if d["kind"] == "ClusterRole"][0]
for rule in cr["rules"]:
    assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
    if "secrets" in rule["resources"]:
        assert sorted(rule["verbs"]) == ["create", "get"], rule
    assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"]

# Hardened operator pod.
for docs in (default, ns, watch):
    dep = [d for d in docs if d["kind"] == "Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = pod["containers"][0]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "limits" in c["resources"]
env = lambda docs: {e["name"]: e.get("value") for e in [d for d in docs if d["kind"] == "Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
assert env(default)["WATCH_NAMESPACE"] == "" and env(default)["LEADER_ELECT"] == "true"
assert env(ns)["WATCH_NAMESPACE"] == "beehive-system"
assert env(watch)["WATCH_NAMESPACE"] == "chat" and env(watch)["LEADER_ELECT"] == "false"
assert "PodDisruptionBudget" in kinds(ns) and "PodDisruptionBudget" not in kinds(default)
assert "ServiceMonitor" in kinds(ns) and "ServiceMonitor" not in kinds(default)
PYEOF
}
check "chart: CRD policy, least-privilege RBAC in both scopes, hardened pod" chart_assertions

# --- the plain-kubectl install manifest ---
check "charts/install.yaml passes kubernetes-validate --strict" validate charts/install.yaml
check "charts/install.yaml: any CRD in it passes the API server's CRD checks" "$OPERATOR" check-crd charts/install.yaml
install_assertions() {
  "$PY" - "$ROOT/charts/install.yaml" <<'PYEOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = [d["kind"] for d in docs]
assert kinds[0] == "Namespace", kinds
assert "CustomResourceDefinition" not in kinds, "the CRD comes from crds/"
assert "Deployment" in kinds and "ClusterRole" in kinds
for d in docs[1:]:
    ns = d["metadata"].get("namespace")
    assert ns in (None, "beehive-system"), (d["kind"], ns)
PYEOF
}
check "install manifest: namespace first, no CRD, everything in beehive-system" install_assertions

# --- examples against the CRD schema, and what the operator makes of them ---
schema_check() {
  "$PY" - "$ROOT/crds/beehive.dev_beehiveclusters.yaml" "$@" <<'PYEOF'
import sys, yaml, jsonschema, copy
crd = yaml.safe_load(open(sys.argv[1]))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
def nullable(node):
    # OpenAPI's `nullable: true` is JSON Schema's type union with null; unknown fields are
    # rejected as kubectl's strict field validation does.
    if isinstance(node, dict):
        if node.get("nullable") and "type" in node:
            node["type"] = [node["type"], "null"]
        if "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for v in node.values():
            nullable(v)
    elif isinstance(node, list):
        for v in node:
            nullable(v)
schema = copy.deepcopy(schema)
nullable(schema)
schema.pop("additionalProperties", None)  # apiVersion, kind and metadata are implicit at the root
validator = jsonschema.Draft7Validator(schema)
bad = 0
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "BeehiveCluster":
            continue
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
        for e in errors:
            print(f"{path}: {'.'.join(map(str, e.path))}: {e.message}")
        bad += len(errors)
        print(f"{path}: {doc['metadata']['name']}: {'ok' if not errors else 'INVALID'}")
sys.exit(1 if bad else 0)
PYEOF
}
examples=(examples/*.yaml)
check "examples validate against the CRD schema (jsonschema)" schema_check "${examples[@]}"
cat >"$WORK/broken.yaml" <<'YAML'
apiVersion: beehive.dev/v1alpha1
kind: BeehiveCluster
metadata: {name: broken}
spec:
  gateway: {replicas: many, service: {type: Magic}}
  unknownField: true
YAML
not() { ! "$@"; }
rejects_all_mistakes() {
  local out
  out="$(schema_check "$WORK/broken.yaml" 2>&1)" && { echo "accepted: $out"; return 1; }
  for m in "'many' is not of type 'integer'" "'Magic' is not one of" "'unknownField' was unexpected"; do
    echo "$out" | grep -qF "$m" || { echo "missing: $m in $out"; return 1; }
  done
}
check "a broken example is rejected by the schema check (type, enum, unknown field)" rejects_all_mistakes
for ex in "${examples[@]}"; do
  check "$(basename "$ex"): non-BeehiveCluster objects pass kubernetes-validate --strict" bash -c "
    '$PY' -c 'import sys,yaml; docs=[d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d[\"kind\"]!=\"BeehiveCluster\"]; print(yaml.safe_dump_all(docs))' '$ex' > '$WORK/plain.yaml'
    if grep -q kind '$WORK/plain.yaml'; then kubernetes-validate --strict --quiet -k 1.33.0 '$WORK/plain.yaml'; fi"
  rendered="$WORK/rendered-$(basename "$ex")"
  check "$(basename "$ex"): objects the operator would create pass kubernetes-validate --strict" bash -c "'$OPERATOR' render '$ex' --namespace beehive > '$rendered' && $(declare -f validate); K8S_VERSIONS='$K8S_VERSIONS' validate '$rendered'"
done

# --- alerts: the PrometheusRule the operator creates, through promtool ---
rules_from_render() { # example -> the rule groups of its PrometheusRule, as a rules file
  "$OPERATOR" render "$1" --namespace beehive | "$PY" -c '
import sys, yaml
rules = [d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "PrometheusRule"]
assert len(rules) == 1, [r["metadata"]["name"] for r in rules]
print(yaml.safe_dump(rules[0]["spec"], sort_keys=False))'
}
check "operator/monitoring/prometheus-rules.yaml is the rule of examples/production-operators.yaml" \
  bash -c "diff -u operator/monitoring/prometheus-rules.yaml <($(declare -f rules_from_render); OPERATOR='$OPERATOR' PY='$PY' rules_from_render examples/production-operators.yaml)"
check "promtool check rules" promtool check rules operator/monitoring/prometheus-rules.yaml
check "promtool test rules (every alert fires on its condition, none on a healthy installation)" \
  promtool test rules operator/monitoring/rules_test.yaml
check "promtool test rules fails when an alert is wrong (the test can fail)" bash -c "
  sed 's/> 1000/> 100000/' operator/monitoring/prometheus-rules.yaml > '$WORK/broken-rules.yaml'
  sed 's#prometheus-rules.yaml#$WORK/broken-rules.yaml#' operator/monitoring/rules_test.yaml > '$WORK/broken-test.yaml'
  ! promtool test rules '$WORK/broken-test.yaml' >/dev/null 2>&1"

echo
echo "operator artifacts: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
