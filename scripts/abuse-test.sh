#!/usr/bin/env bash
# Abuse tests (issue 5, item 4) against a live `beehive serve all` (rate limits off,
# its own database and installation prefix on the machine's PostgreSQL/Redis/RabbitMQ,
# which are only used, never restarted):
#   1. a bounded randomized-frame run (tests/fault/abuse_ws.py): attackers send random
#      bytes, random JSON, valid-but-wrong, huge and protocol-violating frames and broken
#      handshakes while a well-behaved pair keeps chatting; the gateway must stay up and
#      keep serving it;
#   2. schemathesis against GET /api/v1/openapi.json (bounded examples): no 5xx, and
#      responses must match the documented schema, content type and headers.
# The gateway log must contain no panic. About 2-3 minutes once built.
#
#   scripts/abuse-test.sh [--seconds N] [--examples N] [--strict]
# --strict also enforces that every status code returned is documented in the OpenAPI
# document (schemathesis status_code_conformance). Fuzz targets: see fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_RUN=60
EXAMPLES=${BEEHIVE_SCHEMATHESIS_EXAMPLES:-40}
CHECKS=not_a_server_error,content_type_conformance,response_headers_conformance,response_schema_conformance
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_RUN=$2; shift 2 ;;
    --examples) EXAMPLES=$2; shift 2 ;;
    --strict) CHECKS=$CHECKS,status_code_conformance; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1;32m==> %s\033[0m\n' "$*"; }
fail() { printf '\033[1;31m%s\033[0m\n' "$*" >&2; }

scripts/infra.sh

TOOLS=${BEEHIVE_TOOLS_DIR:-$HOME/.cache/beehive-tools}
ST_VENV=$TOOLS/schemathesis
ST_VERSION=4.32.5
if ! "$ST_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  say "installing schemathesis $ST_VERSION into $ST_VENV"
  python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

PROFILE=${BEEHIVE_PROFILE:-dev}
say "building beehive ($PROFILE)"
cargo build --profile "$PROFILE" -p beehive
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PROFILE_DIR=$PROFILE
[ "$PROFILE" = "dev" ] && PROFILE_DIR=debug
BIN=$TARGET_DIR/$PROFILE_DIR/beehive

WORK=$(mktemp -d /tmp/beehive-abuse-XXXXXX)
RUN_ID=abuse$(date +%s)$RANDOM
DB_BASE=${BEEHIVE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB_URL=${DB_BASE%/*}/$RUN_ID
PID=""
cleanup() {
  local rc=$?
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  if command -v psql >/dev/null 2>&1; then
    psql "$DB_BASE" -qAtc "DROP DATABASE IF EXISTS \"$RUN_ID\" WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ $rc -eq 0 ]; then rm -rf "$WORK"; else fail "logs kept in $WORK"; fi
}
trap cleanup EXIT

say "starting beehive serve all (database $RUN_ID)"
env BEEHIVE_DATABASE_URL="$DB_URL" \
  BEEHIVE_REDIS_URL="${BEEHIVE_TEST_REDIS_URL:-redis://127.0.0.1:6379}" \
  BEEHIVE_AMQP_URL="${BEEHIVE_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}" \
  BEEHIVE_INSTALLATION="$RUN_ID" BEEHIVE_INSTANCE_ID="$RUN_ID" BEEHIVE_RATE_LIMITS=off \
  BEEHIVE_HTTP_ADDR=127.0.0.1:0 BEEHIVE_ADMIN_ADDR=127.0.0.1:0 \
  BEEHIVE_AUTH_LISTEN=127.0.0.1:0 BEEHIVE_USER_LISTEN=127.0.0.1:0 BEEHIVE_SOCIAL_LISTEN=127.0.0.1:0 \
  BEEHIVE_MESSAGE_LISTEN=127.0.0.1:0 BEEHIVE_PRESENCE_LISTEN=127.0.0.1:0 \
  BEEHIVE_SEARCH_LISTEN=127.0.0.1:0 BEEHIVE_FILE_LISTEN=127.0.0.1:0 \
  BEEHIVE_LOG_FORMAT=json BEEHIVE_SEARCH_INDEX_DIR="$WORK/search-index" \
  "$BIN" serve all --addr-file "$WORK/addresses.json" >"$WORK/beehive.log" 2>&1 &
PID=$!
for _ in $(seq 1 600); do
  [ -s "$WORK/addresses.json" ] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/addresses.json" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { tail -50 "$WORK/beehive.log"; fail "beehive exited"; exit 1; }
  sleep 0.1
done
read -r HTTP ADMIN < <(python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); print("http://"+a["http"], "http://"+a["admin"])' "$WORK/addresses.json")
for _ in $(seq 1 600); do
  curl -sf "$ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$ADMIN/readyz" >/dev/null || { fail "beehive never became ready"; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
say "beehive at $HTTP (RSS $(rss) KiB)"

FAILED=0

say "randomized frames against the live gateway (${SECONDS_RUN}s)"
if ! python3 tests/fault/abuse_ws.py --url "$HTTP" --seconds "$SECONDS_RUN"; then
  FAILED=1
fi
say "gateway RSS after the frame run: $(rss) KiB"

token() { # a fresh user's access token
  curl -sf -X POST "$HTTP/api/v1/auth/register" -H 'Content-Type: application/json' \
    -d "{\"username\":\"st_$(date +%s%N | tail -c 12)\",\"password\":\"password-123\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

st() { # label, token, schemathesis args...
  local label=$1 tok=$2; shift 2
  say "schemathesis: $label ($EXAMPLES examples per operation; checks $CHECKS)"
  if ! SCHEMATHESIS_HOOKS="$PWD/scripts/schemathesis_hooks.py" "$ST_VENV/bin/schemathesis" run "$HTTP/api/v1/openapi.json" --checks "$CHECKS" \
      --max-examples "$EXAMPLES" --no-shrink --seed "${BEEHIVE_SCHEMATHESIS_SEED:-$RANDOM}" \
      --warnings off -H "Authorization: Bearer $tok" "$@" >"$WORK/st-$label.txt" 2>&1; then
    sed -n '/FAILURES/,$p' "$WORK/st-$label.txt" | head -150
    FAILED=1
  else
    tail -12 "$WORK/st-$label.txt"
  fi
}
# Logout and password changes revoke the caller's session: they get their own run and
# token, so the main run stays authenticated.
st main "$(token)" --exclude-path /api/v1/auth/logout --exclude-path /api/v1/users/me/password
st revoking "$(token)" --include-path /api/v1/auth/logout --include-path /api/v1/users/me/password

if ! kill -0 "$PID" 2>/dev/null; then
  fail "beehive died during the abuse tests"
  FAILED=1
fi
if grep -q 'panicked' "$WORK/beehive.log"; then
  grep -m5 'panicked' "$WORK/beehive.log" >&2
  fail "beehive panicked"
  FAILED=1
fi
say "gateway RSS at the end: $(rss) KiB"
if [ $FAILED -eq 0 ]; then
  echo "abuse: 1 passed, 0 failed"
else
  echo "abuse: 0 passed, 1 failed"
fi
exit $FAILED
