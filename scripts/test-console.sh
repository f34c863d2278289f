#!/usr/bin/env bash
# The console's tests: the SDK's unit tests (vitest), then the browser test
# (console/e2e/console.e2e.mjs) in headless Chromium against a live `beehive serve all`
# with its own database and Redis/RabbitMQ prefix on the machine's PostgreSQL, Redis
# and RabbitMQ. Access tokens live 10 s there, so the console refreshes them (and
# rotates the refresh token, shared by tabs) several times during the run.
# Installs what it needs: Node.js (when missing or too old), the npm packages,
# Debian's `chromium` package and a CJK font.
#   scripts/test-console.sh [--update-screenshot]
# --update-screenshot writes the README's screenshot (docs/console.png).
# On failure, screenshots and the server log stay in the printed directory.
set -euo pipefail
cd "$(dirname "$0")/.."

UPDATE_SCREENSHOT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --update-screenshot) UPDATE_SCREENSHOT=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1;32m==> %s\033[0m\n' "$*"; }
fail() { printf '\033[1;31m%s\033[0m\n' "$*" >&2; }

scripts/infra.sh
# shellcheck source=scripts/console-build.sh
. scripts/console-build.sh
build_console --test

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
# A CJK font too (5 MB), so Chinese text renders in the screenshots instead of boxes.
PACKAGES=()
[ -x "$CHROMIUM" ] || PACKAGES+=(chromium)
fc-list 2>/dev/null | grep -i "wqy\|noto sans cjk" >/dev/null || PACKAGES+=(fonts-wqy-microhei)
if [ ${#PACKAGES[@]} -gt 0 ]; then
  say "installing ${PACKAGES[*]} (Debian packages)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi
"$CHROMIUM" --version 2>/dev/null

PROFILE=${BEEHIVE_PROFILE:-dev}
say "building beehive ($PROFILE)"
cargo build --profile "$PROFILE" -p beehive
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
PROFILE_DIR=$PROFILE
[ "$PROFILE" = "dev" ] && PROFILE_DIR=debug
BIN=$TARGET_DIR/$PROFILE_DIR/beehive

WORK=$(mktemp -d /tmp/beehive-console-XXXXXX)
RUN_ID=console$(date +%s)$RANDOM
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
  if [ $rc -eq 0 ]; then rm -rf "$WORK"; else fail "screenshots and logs kept in $WORK"; fi
}
trap cleanup EXIT

say "starting beehive serve all (database $RUN_ID)"
env BEEHIVE_DATABASE_URL="$DB_URL" \
  BEEHIVE_REDIS_URL="${BEEHIVE_TEST_REDIS_URL:-redis://127.0.0.1:6379}" \
  BEEHIVE_AMQP_URL="${BEEHIVE_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}" \
  BEEHIVE_INSTALLATION="$RUN_ID" BEEHIVE_INSTANCE_ID="$RUN_ID" \
  BEEHIVE_ACCESS_TOKEN_TTL=10s \
  BEEHIVE_HTTP_ADDR=127.0.0.1:0 BEEHIVE_ADMIN_ADDR=127.0.0.1:0 \
  BEEHIVE_AUTH_LISTEN=127.0.0.1:0 BEEHIVE_USER_LISTEN=127.0.0.1:0 BEEHIVE_SOCIAL_LISTEN=127.0.0.1:0 \
  BEEHIVE_MESSAGE_LISTEN=127.0.0.1:0 BEEHIVE_PRESENCE_LISTEN=127.0.0.1:0 \
  BEEHIVE_SEARCH_LISTEN=127.0.0.1:0 BEEHIVE_FILE_LISTEN=127.0.0.1:0 \
  BEEHIVE_LOG_FORMAT=json BEEHIVE_SEARCH_INDEX_DIR="$WORK/search-index" \
  BEEHIVE_FILE_STORAGE_DIR="$WORK/files" \
  BEEHIVE_CONSOLE_DIR="$PWD/console/dist" \
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
say "beehive at $HTTP"

SHOT=()
[ -n "$UPDATE_SCREENSHOT" ] && SHOT=(--screenshot "$PWD/docs/console.png")
say "browser test (headless Chromium)"
(cd console && node e2e/console.e2e.mjs --url "$HTTP" --out "$WORK/results" --chromium "$CHROMIUM" --log "$WORK/beehive.log" "${SHOT[@]}")

if grep -q 'panicked' "$WORK/beehive.log"; then
  grep -m5 'panicked' "$WORK/beehive.log" >&2
  fail "beehive panicked"
  exit 1
fi
say "console tests passed"
