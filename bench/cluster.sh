#!/usr/bin/env bash
# Starts a benchmark installation on this machine: the services (auth, user, social,
# presence, message) in one process, the file service in another (storing in
# $BENCH_DIR/files, emptied on start), and N gateway processes, each gateway with its own
# HTTP port (BENCH_HTTP_BASE + i) and open-file limit, against the local PostgreSQL,
# Redis and RabbitMQ (own database `beehive_bench` and installation prefix, reset on
# start). Rate limits are off: the load generator is one client address.
#
#   bench/cluster.sh start [gateways]   # prints the gateway URLs and pids
#   bench/cluster.sh stop
#
# Environment: BEEHIVE_BIN (default target/release/beehive), BENCH_HTTP_BASE (28080),
# BENCH_GRPC_BASE (52050), BENCH_DIR (/tmp/beehive-bench), BENCH_DB (beehive_bench; two
# installations at once need their own ports, dirs and databases), extra BEEHIVE_* settings.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${BENCH_DIR:-/tmp/beehive-bench}
BIN=${BEEHIVE_BIN:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/beehive}
HTTP_BASE=${BENCH_HTTP_BASE:-28080}
GRPC_BASE=${BENCH_GRPC_BASE:-52050}
DB=${BENCH_DB:-beehive_bench}

stop() {
  if [ -d "$DIR" ]; then
    for f in "$DIR"/*.pid; do
      [ -e "$f" ] || continue
      kill "$(cat "$f")" 2>/dev/null || true
    done
    sleep 2
    for f in "$DIR"/*.pid; do
      [ -e "$f" ] || continue
      kill -9 "$(cat "$f")" 2>/dev/null || true
      rm -f "$f"
    done
  fi
}

wait_http() {
  for _ in $(seq 1 300); do
    if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "timed out waiting for $1" >&2
  return 1
}

start() {
  local gateways=${1:-1}
  stop
  mkdir -p "$DIR"
  [ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release -p beehive)" >&2; exit 1; }
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
  export BEEHIVE_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
  export BEEHIVE_REDIS_URL=${BEEHIVE_REDIS_URL:-redis://127.0.0.1:6379}
  export BEEHIVE_AMQP_URL=${BEEHIVE_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
  export BEEHIVE_INSTALLATION=${BENCH_DB:-bench}
  export BEEHIVE_RATE_LIMITS=off
  export BEEHIVE_LOG_LEVEL=${BEEHIVE_LOG_LEVEL:-warn}
  export BEEHIVE_ACCESS_TOKEN_TTL=12h
  local i=0
  # Search gets a port too, so BENCH_SERVICES may run it (e.g. in a process of its own
  # for the search-lag probe).
  export BEEHIVE_SEARCH_INDEX_DIR="$DIR/search-index"
  rm -rf "$BEEHIVE_SEARCH_INDEX_DIR"
  for c in auth user social presence message file search; do
    local port=$((GRPC_BASE + i))
    export "BEEHIVE_${c^^}_LISTEN=127.0.0.1:$port"
    export "BEEHIVE_${c^^}_ADDR=http://127.0.0.1:$port"
    i=$((i + 1))
  done
  export BEEHIVE_FILE_STORAGE_DIR="$DIR/files"
  rm -rf "$BEEHIVE_FILE_STORAGE_DIR"
  "$BIN" migrate >/dev/null
  # A fresh installation: the search index queue of an earlier run would otherwise keep
  # filling (durable, bound) while this run has no search component.
  rabbitmqctl -q delete_queue "$BEEHIVE_INSTALLATION.search.index" >/dev/null 2>&1 || true
  # BENCH_SERVICES splits the services over processes, e.g. "auth,user,social message
  # presence file" (space-separated groups); by default one process for all of them but
  # the file service, which has its own (its RSS is measured apart). Search runs only
  # when named, e.g. "auth,user,social,presence,message file search".
  local groups=(${BENCH_SERVICES:-auth,user,social,presence,message file}) n=0 file_pid=""
  for group in "${groups[@]}"; do
    BEEHIVE_ADMIN_ADDR=127.0.0.1:$((GRPC_BASE + 40 + n)) \
      "$BIN" serve "$group" >"$DIR/services-$n.log" 2>&1 &
    echo $! >"$DIR/services-$n.pid"
    [[ ",$group," == *,file,* ]] && file_pid=$!
    wait_http "http://127.0.0.1:$((GRPC_BASE + 40 + n))/readyz"
    n=$((n + 1))
  done
  local urls=() pids=()
  for g in $(seq 0 $((gateways - 1))); do
    local http=$((HTTP_BASE + g))
    (
      ulimit -n 20000
      BEEHIVE_HTTP_ADDR=127.0.0.1:$http BEEHIVE_INSTANCE_ID=bench-gw-$g \
        BEEHIVE_GATEWAY_LISTEN=127.0.0.1:$((GRPC_BASE + 10 + g)) \
        BEEHIVE_ADMIN_ADDR=127.0.0.1:$((GRPC_BASE + 30 + g)) \
        exec "$BIN" serve gateway >"$DIR/gateway-$g.log" 2>&1
    ) &
    echo $! >"$DIR/gateway-$g.pid"
    urls+=("http://127.0.0.1:$http")
    pids+=("$!")
  done
  for u in "${urls[@]}"; do wait_http "$u/api/v1/openapi.json"; done
  local IFS=,
  echo "services_pids=$(cat "$DIR"/services-*.pid | paste -sd,)"
  echo "file_pid=$file_pid"
  echo "file_storage_dir=$BEEHIVE_FILE_STORAGE_DIR"
  echo "gateway_urls=${urls[*]}"
  echo "gateway_pids=${pids[*]}"
}

case "${1:-}" in
  start) start "${2:-1}" ;;
  stop) stop ;;
  *) echo "usage: $0 start [gateways] | stop" >&2; exit 2 ;;
esac
