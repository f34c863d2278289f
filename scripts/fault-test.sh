#!/usr/bin/env bash
# Fault tests (issue 5, item 3): chat load through two gateways while a gateway is
# killed (-9), both gateways are rolled (SIGTERM and drain, issue 14), the message
# service, RabbitMQ, Redis and PostgreSQL are restarted; then
# every acknowledged message must have reached every recipient device exactly once, in
# seq order. Before the chat load (issue 11, item 6): the file service is killed (-9)
# between two tus PATCHes and in the middle of one; the upload must resume from the
# stored offset and its bytes round-trip exactly; then a short `beehive-bench files`. PostgreSQL, Redis and RabbitMQ are PRIVATE instances the test starts on
# free ports with their own data directories (the machine's shared servers are never
# touched). See tests/fault/run.py.
#
#   scripts/fault-test.sh [--short]   about 2-3 minutes once built (CI)
#   scripts/fault-test.sh --long      more load, every fault three times (~4.5 minutes)
# Extra arguments go to tests/fault/run.py (e.g. --pairs 100 --rate 20 --keep, or
# --faults rolling-restart --drain-window 5s for the rollout alone, --faults file-kill
# for the file service alone, in seconds).
# BEEHIVE_PROFILE=release builds and runs optimised binaries (default: dev).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=()
ARGS=()
for arg in "$@"; do
  case "$arg" in
    --short) ;;
    --long) MODE=(--long) ;;
    *) ARGS+=("$arg") ;;
  esac
done

say() { printf '\033[1;32m==> %s\033[0m\n' "$*"; }

need() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ]; }
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
need redis-server /usr/bin/redis-server || missing+=(redis-server)
need rabbitmq-server /usr/lib/rabbitmq/bin/rabbitmq-server || missing+=(rabbitmq-server)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (binaries only; the test runs private instances)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PROFILE=${BEEHIVE_PROFILE:-dev}
say "building beehive and beehive-bench ($PROFILE)"
cargo build --profile "$PROFILE" -p beehive -p beehive-bench
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PROFILE_DIR=$PROFILE
[ "$PROFILE" = "dev" ] && PROFILE_DIR=debug

say "fault tests ${MODE[*]:-(short)}"
exec python3 tests/fault/run.py --bin "$TARGET_DIR/$PROFILE_DIR/beehive" \
  --bench "$TARGET_DIR/$PROFILE_DIR/beehive-bench" "${MODE[@]}" "${ARGS[@]}"
