#!/usr/bin/env bash
# Makes sure PostgreSQL (5432), Redis (6379) and RabbitMQ (5672) answer on localhost.
# A server that already answers is left alone; a missing one is started, and installed
# from the system's packages first when absent (Debian/Ubuntu apt). Safe to run again.
set -euo pipefail

log() { printf '\033[1;34m[infra]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[infra]\033[0m %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO="sudo" || SUDO=""
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 4; i++)); do
    port_open "$2" && return 0
    sleep 0.25
  done
  die "$1 did not open port $2 within $3 s"
}

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "$* missing and no apt-get here: install it yourself and re-run"
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if port_open 5432; then
    log "PostgreSQL already answers on 5432"
  else
    local installed_now=""
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      apt_install postgresql
      installed_now=1
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -1)
    if [ -n "$installed_now" ]; then
      # A fresh development server: let local TCP clients in without a password, as
      # Beehive's default URL (postgres://postgres@127.0.0.1:5432) expects.
      local hba="/etc/postgresql/$version/main/pg_hba.conf"
      $SUDO sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    fi
    log "starting PostgreSQL $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_port PostgreSQL 5432 30
  fi
  if command -v psql >/dev/null 2>&1 && ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    log "warning: cannot log in as postgres@127.0.0.1 without a password;"
    log "         set BEEHIVE_DATABASE_URL / BEEHIVE_TEST_DATABASE_URL with credentials"
  fi
}

ensure_redis() {
  if port_open 6379; then
    log "Redis already answers on 6379"
    return
  fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  log "starting Redis"
  mkdir -p /tmp/beehive-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/beehive-redis --logfile /tmp/beehive-redis/redis.log
  wait_port Redis 6379 15
}

ensure_rabbitmq() {
  if port_open 5672; then
    log "RabbitMQ already answers on 5672"
    return
  fi
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  log "starting RabbitMQ (takes a few seconds)"
  $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port RabbitMQ 5672 90
}

ensure_postgres
ensure_redis
ensure_rabbitmq
log "infrastructure ready"
