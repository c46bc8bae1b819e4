#!/usr/bin/env bash
# Builds the envtest-style Kubernetes API server the operator's tests use
# (DESIGN.md §9): kube/apiserver, a Go program that runs a real kube-apiserver
# (k8s.io/kubernetes v1.37.2, staging modules at v0.37.2) and an embedded etcd
# (go.etcd.io/etcd/server/v3 v3.7) in one process on loopback.
# Built once from Go modules (the module proxy) and cached under
#   ${PGPLANE_TOOLS_DIR:-~/.cache/pgplane}/kube-apiserver-<hash of go.mod, go.sum, main.go>
# with $PGPLANE_TOOLS_DIR/bin/pgplane-kube-apiserver pointing at it.
# Idempotent; a cold build takes several minutes on 2 cores.
# Prints the binary's path on stdout; progress on stderr.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/kube/apiserver
tools=${PGPLANE_TOOLS_DIR:-$HOME/.cache/pgplane}
mkdir -p "$tools/bin"
hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
out=$tools/kube-apiserver-$hash
if [ ! -x "$out" ]; then
  echo "setup-kube: building kube-apiserver ($hash) into $out — takes minutes on a cold cache" >&2
  start=$(date +%s)
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -trimpath -ldflags='-s -w' -o "$out.tmp" .)
  mv "$out.tmp" "$out"
  echo "setup-kube: built in $(( $(date +%s) - start ))s" >&2
fi
ln -sfn "$out" "$tools/bin/pgplane-kube-apiserver"
echo "$out"
