#!/usr/bin/env bash
# Builds the Kubernetes parts the tests run (DESIGN.md §9): kube/cluster, one
# Go binary holding etcd + kube-apiserver, kube-controller-manager,
# kube-scheduler and kubelet (k8s.io/kubernetes v1.37.2, staging modules at
# v0.37.2, go.etcd.io/etcd/server/v3 v3.7), one mode each:
#   - the operator's apiserver-only tests run `pgplane-kube-apiserver`
#     (apiserver + embedded etcd on loopback);
#   - the single-node cluster tests (the kubetest crate) run every mode, with
#     the Debian containerd, runc and CNI plugins scripts/setup.sh installs.
# Built once from Go modules (the module proxy) and cached under
#   ${PGPLANE_TOOLS_DIR:-~/.cache/pgplane}/kube-<hash of go.mod, go.sum, *.go>
# with $PGPLANE_TOOLS_DIR/bin/pgplane-kube and bin/pgplane-kube-apiserver
# pointing at it; other builds are removed. Idempotent; a cold build takes
# tens of minutes on 2 cores, a rebuild after a change to kube/cluster's own
# code about a minute.
# Prints the binary's path on stdout; progress on stderr.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/kube/cluster
tools=${PGPLANE_TOOLS_DIR:-$HOME/.cache/pgplane}
mkdir -p "$tools/bin"
hash=$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-16)
out=$tools/kube-$hash
if [ ! -x "$out" ]; then
  echo "setup-kube: building pgplane-kube ($hash) into $out — takes minutes on a cold cache" >&2
  start=$(date +%s)
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -trimpath -ldflags='-s -w' -o "$out.tmp" .)
  mv "$out.tmp" "$out"
  echo "setup-kube: built in $(( $(date +%s) - start ))s" >&2
fi
ln -sfn "$out" "$tools/bin/pgplane-kube"
ln -sfn "$out" "$tools/bin/pgplane-kube-apiserver"
# Earlier builds (kube-apiserver-* were the apiserver-only binary).
find "$tools" -maxdepth 1 -type f \( -name 'kube-apiserver-*' -o -name 'kube-*' \) ! -path "$out" -delete
echo "$out"
