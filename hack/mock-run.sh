#!/usr/bin/env bash
# Runs the real beehive-operator binary (release build) against the mock API server
# (operator/examples/mock_apiserver.rs) with N BeehiveClusters and leader election on, then
# reports its idle RSS and the reconcile figures from its own /metrics.
#   hack/mock-run.sh [clusters] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10}"
SECS="${2:-45}"
PROFILE="${PROFILE:-release}"
flag=(); [ "$PROFILE" = release ] && flag=(--release)
[ -n "${SKIP_BUILD:-}" ] || cargo build -q "${flag[@]}" -p beehive-operator --bin beehive-operator --example mock_apiserver
TARGET="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$PROFILE"
WORK="$(mktemp -d)"
cleanup() { kill "${OP_PID:-}" "${API_PID:-}" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
"$TARGET/examples/mock_apiserver" "$WORK/kubeconfig" "$N" 2>"$WORK/api.log" &
API_PID=$!
for _ in $(seq 50); do [ -s "$WORK/kubeconfig" ] && break; sleep 0.1; done
PORT=$((20000 + RANDOM % 20000))
KUBECONFIG="$WORK/kubeconfig" POD_NAMESPACE=default POD_NAME=mock-0 \
  "$TARGET/beehive-operator" run --metrics-addr "127.0.0.1:$PORT" --leader-elect --log-level warn \
  >"$WORK/operator.log" 2>&1 &
OP_PID=$!
# Phase 1: the first reconcile of every cluster (creates everything). Phase 2: the rest,
# reconciles of unchanged clusters (watch events, requeues): they must write nothing.
sleep 10
m1="$(curl -fsS "http://127.0.0.1:$PORT/metrics")"
sleep "$((SECS > 10 ? SECS - 10 : 1))"
m2="$(curl -fsS "http://127.0.0.1:$PORT/metrics")"
rss_kib="$(awk '/^VmRSS/ {print $2}' "/proc/$OP_PID/status")"
hwm_kib="$(awk '/^VmHWM/ {print $2}' "/proc/$OP_PID/status")"
echo "clusters: $N, ran ${SECS}s ($PROFILE build)"
echo "idle RSS: $((rss_kib / 1024)) MiB ($rss_kib KiB); peak RSS: $((hwm_kib / 1024)) MiB"
echo "$m2" | grep -E '^beehive_operator_(reconciles_total|reconcile_errors_total|applied_objects_total|deleted_objects_total|status_writes_total|leader)' || true
python3 - "$m1" "$m2" <<'PYEOF'
import sys
def parse(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("beehive_operator_") and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out
a, b = parse(sys.argv[1]), parse(sys.argv[2])
def writes(m):
    return sum(v for k, v in m.items() if k.startswith(("beehive_operator_applied_objects_total", "beehive_operator_deleted_objects_total", "beehive_operator_status_writes_total")))
S, C = "beehive_operator_reconcile_duration_seconds_sum", "beehive_operator_reconcile_duration_seconds_count"
for label, s, c, w in [("first 10 s (create)", a.get(S, 0), a.get(C, 0), writes(a)),
                       ("afterwards (steady)", b.get(S, 0) - a.get(S, 0), b.get(C, 0) - a.get(C, 0), writes(b) - writes(a))]:
    mean = f"{1000 * s / c:.2f} ms" if c else "-"
    print(f"{label}: {int(c)} reconciles, mean {mean}, {int(w)} writes")
PYEOF
grep -iE '"level":"(ERROR|WARN)"|panic' "$WORK/operator.log" | head -5 || true
