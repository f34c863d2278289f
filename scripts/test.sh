#!/usr/bin/env bash
# Runs every Beehive test on this machine, setting up what it needs first:
# PostgreSQL, Redis and RabbitMQ (scripts/infra.sh), the Rust toolchain if absent,
# and the Python tools of the abuse and operator checks (installed on first use under
# ~/.cache/beehive-tools). Order: format, clippy, cargo tests (unit, integration,
# end-to-end, authorization matrix), fault tests, abuse tests, the web console (SDK
# unit tests, browser test in headless Chromium; brings Node.js and Debian's chromium),
# operator manifests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1;32m==> %s\033[0m\n' "$*"; }

step "infrastructure"
scripts/infra.sh

step "promtool (Debian's prometheus package): the metrics scrape test runs promtool check metrics"
# shellcheck source=hack/tools.sh
source hack/tools.sh
ensure_promtool
export BEEHIVE_REQUIRE_PROMTOOL=1

if ! command -v cargo >/dev/null 2>&1; then
  step "installing the Rust toolchain (rustup)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "file test tools: moto (a real S3-compatible server) and tuspy (a tus client written by others)"
# The file tests start moto_server themselves on a free port (or use
# BEEHIVE_TEST_S3_URL), and run tests/files/tus_client.py with this virtualenv's Python.
TOOLS=${BEEHIVE_TOOLS_DIR:-$HOME/.cache/beehive-tools}
FILES_VENV=$TOOLS/files
if ! "$FILES_VENV/bin/python" -c 'import moto, tusclient' 2>/dev/null; then
  python3 -m venv "$FILES_VENV"
  "$FILES_VENV/bin/pip" install -q 'moto[server]==5.2.5' 'tuspy==1.1.0'
fi
export PATH="$FILES_VENV/bin:$PATH"
export BEEHIVE_TEST_PYTHON="$FILES_VENV/bin/python"

step "tests (unit, integration against real PostgreSQL/Redis/RabbitMQ, end-to-end)"
# Tests isolate themselves (own database, own Redis/RabbitMQ prefix), so they run in
# parallel; a few threads per test binary keep 2-core machines responsive.
cargo test --workspace --no-fail-fast -- --test-threads="${BEEHIVE_TEST_THREADS:-4}"

step "fault tests (kill -9 a gateway and the message service, restart RabbitMQ, Redis, PostgreSQL under load; private instances)"
scripts/fault-test.sh --short

step "abuse tests (randomized frames against a live gateway, schemathesis over the OpenAPI document)"
scripts/abuse-test.sh

step "web console (SDK unit tests; browser test: two users, friends, chat, group, search, offline, in headless Chromium)"
scripts/test-console.sh

if [ -x scripts/test-operator.sh ]; then
  step "operator manifests (helm lint/template, kubernetes-validate, CRD schema)"
  # The binary `cargo test` just built (the operator's integration tests need it): a
  # `cargo build -p beehive-operator` would compile its dependencies again with other features.
  target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  if [ -x "$target_dir/debug/beehive-operator" ]; then
    export BEEHIVE_OPERATOR_BIN="$target_dir/debug/beehive-operator"
  fi
  scripts/test-operator.sh
fi

step "all tests passed"
