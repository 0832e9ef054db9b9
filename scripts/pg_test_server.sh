#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on 127.0.0.1 (port $1, default 54329) for the analytics
# sync test and prints its URL. Uses Debian's postgresql package (installs it when missing and
# running as root). The server runs as the `postgres` user from a fresh data directory.
set -euo pipefail
port="${1:-54329}"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "postgresql is not installed (apt-get install -y postgresql)" >&2
    exit 1
  fi
fi
bin="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
data="/tmp/doin-pg-$port"
run() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
if ! run "$bin/pg_ctl -D $data status" >/dev/null 2>&1; then
  rm -rf "$data"
  mkdir -p "$data"
  [ "$(id -u)" = 0 ] && chown postgres "$data"
  run "$bin/initdb -D $data -U doin --auth=trust -E UTF8" >/dev/null
  run "$bin/pg_ctl -D $data -l $data/log -w -o '-p $port -k /tmp -c listen_addresses=127.0.0.1' start" >/dev/null
fi
echo "postgres://doin@127.0.0.1:$port/postgres"
