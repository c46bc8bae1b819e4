#!/usr/bin/env bash
# The whole test suite — the README's test command and what CI runs:
# set-up, formatting, lints, every test (real Postgres, real PGMQ, the built
# binary end to end), and the checks that generated files are current.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-terraform.sh
bash scripts/setup-tofu.sh >/dev/null  # OpenTofu built from the Go module proxy (cached)
bash scripts/setup-s3.sh       # moto's S3 server for the backup tests (PyPI, cached)
bash scripts/setup-kube.sh >/dev/null  # etcd + kube-apiserver, controller manager, scheduler, kubelet in one binary (cached)
eval "$(bash scripts/test-db.sh)"
export DATABASE_URL
echo "== cargo fmt" >&2
cargo fmt --all -- --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries for the end-to-end tests)" >&2
cargo build --workspace --locked --bins
echo "== images for the Kubernetes node tests (kubetest)" >&2
bash scripts/build-images.sh target/debug/pgplane >/dev/null
echo "== cargo test" >&2
# Generated files (state diagram, PG settings table, OpenAPI) are checked by
# tests in `domain` and `e2e`.
cargo test --workspace --locked -- --test-threads="${PGPLANE_TEST_THREADS:-4}"
