#!/usr/bin/env bash
# The README's first command: set up the machine (idempotent), build pgplane
# in release mode, and run `pgplane up` with the arguments given.
#   bash scripts/up.sh                     # data in /var/lib/pgplane (root) or ./pgplane-data
#   bash scripts/up.sh --data-dir ./demo
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/scripts/setup.sh"
cargo build --release --locked --manifest-path "$root/Cargo.toml" --bin pgplane
exec "$root/target/release/pgplane" up "$@"
