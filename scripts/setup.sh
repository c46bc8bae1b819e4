#!/usr/bin/env bash
# Installs what pgplane and its tests need, idempotently:
#   - PostgreSQL 15 server binaries and contrib, the extensions beyond contrib the
#     data planes offer (pg_cron, pgaudit, PostGIS, pg_partman, pg_repack, hll, rum,
#     wal2json), pgBackRest, git, and the OpenSSL headers
#     git2 builds against (Debian packages) when missing;
#   - the container runtime and CNI plugins of the tests' Kubernetes node
#     (containerd, runc, containernetworking-plugins; see scripts/setup-kube.sh);
#   - the unprivileged OS user Postgres runs as when pgplane runs as root;
#   - rustfmt and clippy.
# Safe to run again; it only does what is missing.
set -euo pipefail
pguser=${PGPLANE_POSTGRES_USER:-postgres}
need_apt=()
bindir=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[ -x "$bindir/initdb" ] && [ -x "$bindir/postgres" ] || need_apt+=(postgresql-15)
# The parameter table (domain/data/pg15_settings.tsv) is generated from one minor
# release, and minor releases add and remove parameters: a server of another
# release is upgraded to Debian's newest 15.x (run scripts/gen-pg-settings.sh
# when that is newer than the table).
table_version=$(sed -n '1s/.*PostgreSQL \(15\.[0-9]*\).*/\1/p' "$(dirname "$0")/../domain/data/pg15_settings.tsv")
if [ -x "$bindir/postgres" ] && [ -n "$table_version" ]; then
  server_version=$("$bindir/postgres" --version | sed -n 's/.* \(15\.[0-9]*\).*/\1/p')
  [ "$server_version" = "$table_version" ] || need_apt+=(postgresql-15 postgresql-client-15)
fi
[ -f /usr/share/postgresql/15/extension/hstore.control ] || need_apt+=(postgresql-contrib)
command -v psql >/dev/null || need_apt+=(postgresql-client-15)
# Extensions beyond contrib the data planes offer (the instance image copies them).
ext=/usr/share/postgresql/15/extension
[ -f "$ext/pg_cron.control" ] || need_apt+=(postgresql-15-cron)
[ -f "$ext/pgaudit.control" ] || need_apt+=(postgresql-15-pgaudit)
[ -f "$ext/postgis.control" ] || need_apt+=(postgresql-15-postgis-3 postgresql-15-postgis-3-scripts)
[ -f "$ext/pg_partman.control" ] || need_apt+=(postgresql-15-partman)
[ -f "$ext/pg_repack.control" ] || need_apt+=(postgresql-15-repack)
[ -f "$ext/hll.control" ] || need_apt+=(postgresql-15-hll)
[ -f "$ext/rum.control" ] || need_apt+=(postgresql-15-rum)
[ -f "$bindir/../lib/wal2json.so" ] || need_apt+=(postgresql-15-wal2json)
command -v git >/dev/null || need_apt+=(git)
command -v pgbackrest >/dev/null || need_apt+=(pgbackrest)   # WAL archiving, backups, restores
command -v stunnel >/dev/null || need_apt+=(stunnel4)         # TLS in front of the tests' S3 server
command -v openssl >/dev/null || need_apt+=(openssl)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)   # git2's https transport
command -v containerd >/dev/null || need_apt+=(containerd)   # the tests' Kubernetes node
command -v runc >/dev/null || need_apt+=(runc)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || need_apt+=(containernetworking-plugins)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)          # the pause image's static binary
command -v chromedriver >/dev/null || need_apt+=(chromium chromium-driver)   # the console's browser tests
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing ${need_apt[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian's package starts a cluster of its own; pgplane does not need it.
  service postgresql stop >/dev/null 2>&1 || true
  # Nor a containerd of its own: each test cluster starts one in its own directory.
  service containerd stop >/dev/null 2>&1 || true
fi
if [ "$(id -u)" = 0 ] && ! id "$pguser" >/dev/null 2>&1; then
  echo "setup: creating system user $pguser" >&2
  useradd --system --no-create-home --shell /usr/sbin/nologin "$pguser"
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
fi
echo "setup: ok" >&2
