#!/usr/bin/env bash
# Brings Beehive up on this machine and shows it working:
#   1. makes sure PostgreSQL, Redis and RabbitMQ run (scripts/infra.sh),
#   2. builds the `beehive` binary and the web console (console/dist; brings Node.js
#      when it is missing or too old),
#   3. starts `beehive serve all` in the background (gateway on http://localhost:8080,
#      admin on :9090; logs in .beehive/beehive.log),
#   4. runs a scripted demo of two users (scripts/demo.py),
# and leaves Beehive running, with the console at http://localhost:8080/.
# `scripts/run-local.sh stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.beehive
PIDFILE=$STATE/beehive.pid
LOG=$STATE/beehive.log
mkdir -p "$STATE"

say() { printf '\033[1;32m==> %s\033[0m\n' "$*"; }

stop() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "stopping Beehive (pid $(cat "$PIDFILE"))"
    kill -TERM "$(cat "$PIDFILE")"
    for _ in $(seq 1 100); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
}

if [ "${1:-}" = "stop" ]; then
  stop
  exit 0
fi

scripts/infra.sh

if ! command -v cargo >/dev/null 2>&1; then
  say "installing the Rust toolchain (rustup)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

PROFILE=${BEEHIVE_PROFILE:-release}
say "building beehive ($PROFILE; the first build takes several minutes)"
cargo build --profile "$PROFILE" -p beehive
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PROFILE_DIR=$PROFILE
[ "$PROFILE" = "dev" ] && PROFILE_DIR=debug
BIN="$TARGET_DIR/$PROFILE_DIR/beehive"

# shellcheck source=scripts/console-build.sh
. scripts/console-build.sh
if ! (build_console); then
  echo "the web console could not be built; Beehive runs without it (see the messages above)" >&2
fi

stop
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  echo "port 8080 is taken by another program; stop it or set BEEHIVE_HTTP_ADDR" >&2
  exit 1
fi

say "starting beehive serve all (log: $LOG)"
BEEHIVE_LOG_FORMAT=${BEEHIVE_LOG_FORMAT:-text} NO_COLOR=1 \
  BEEHIVE_SEARCH_INDEX_DIR=${BEEHIVE_SEARCH_INDEX_DIR:-$STATE/search-index} \
  BEEHIVE_CONSOLE_DIR=${BEEHIVE_CONSOLE_DIR:-$PWD/console/dist} \
  nohup "$BIN" serve all --addr-file "$STATE/addresses.json" >"$LOG" 2>&1 &
echo $! >"$PIDFILE"

for _ in $(seq 1 300); do
  if curl -fsS http://127.0.0.1:9090/readyz >/dev/null 2>&1 && curl -fsS http://127.0.0.1:8080/healthz >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "beehive exited; last log lines:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
  sleep 0.2
done
curl -fsS http://127.0.0.1:9090/readyz >/dev/null || { echo "beehive did not become ready; see $LOG" >&2; exit 1; }

say "running the demo"
python3 scripts/demo.py --url http://localhost:8080 --log "$LOG"

say "Beehive is running: open http://localhost:8080/ (admin http://localhost:9090, pid $(cat "$PIDFILE"))"
echo "    console:      http://localhost:8080/"
echo "    API document: http://localhost:8080/api/v1/openapi.json"
echo "    logs:         $LOG"
echo "    stop:         scripts/run-local.sh stop"
