#!/usr/bin/env bash
# Installs the S3-compatible server the backup tests use, idempotently and
# cached: moto's server mode (PyPI `moto[server]`), in a virtualenv, exposed
# as $PGPLANE_TOOLS_DIR/bin/moto_server (default ~/.cache/pgplane). It serves
# S3 over HTTPS with a certificate it makes itself (`--ssl`), which is what
# pgBackRest needs (it speaks TLS only).
set -euo pipefail
tools=${PGPLANE_TOOLS_DIR:-$HOME/.cache/pgplane}
venv=$tools/s3-venv
bin=$tools/bin
stamp=$venv/.pgplane-moto-installed-1
mkdir -p "$tools" "$bin"
if [ ! -f "$stamp" ]; then
  echo "setup-s3: installing moto[server]==5.2.5 into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
  touch "$stamp"
fi
ln -sf "$venv/bin/moto_server" "$bin/moto_server"
echo "setup-s3: ok ($bin/moto_server)" >&2
