#!/usr/bin/env bash
# Starts (once) the throwaway PostgreSQL 15 cluster the test suite uses for
# `#[sqlx::test]` and the control-plane database of conductor tests, and
# prints its DATABASE_URL. Idempotent: an already running cluster is reused.
#   eval "$(bash scripts/test-db.sh)"   # exports DATABASE_URL
# As root, the server runs as $PGPLANE_POSTGRES_USER (default postgres).
set -euo pipefail
dir=${PGPLANE_TEST_PG_DIR:-/tmp/pgplane-test-pg}
port=${PGPLANE_TEST_PG_PORT:-54329}
password=pgplane-test
bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=/usr/lib/postgresql/15/bin
pguser=${PGPLANE_POSTGRES_USER:-postgres}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u "$pguser" -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ] && ! id "$pguser" >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin "$pguser"
fi
if [ ! -f "$dir/data/PG_VERSION" ]; then
  rm -rf "$dir"; mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown "$pguser" "$dir"
  printf '%s\n' "$password" > "$dir/pw"; [ "$(id -u)" = 0 ] && chown "$pguser" "$dir/pw"
  as_pg "$bindir/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pw" -A scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1
  rm -f "$dir/pw"
  cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 400
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
CONF
fi
if ! as_pg "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
fi
echo "export DATABASE_URL=postgres://postgres:$password@127.0.0.1:$port/postgres"
