#!/usr/bin/env bash
# Builds the OpenTofu CLI the provider's tests run besides the two Terraform
# versions (DESIGN.md §9): `tofu` from the Go module
# github.com/opentofu/opentofu (cmd/tofu) at $TOFU_VERSION, fetched through
# the Go module proxy, built with -trimpath and cached under
#   ${PGPLANE_TOOLS_DIR:-~/.cache/pgplane}/tofu-$TOFU_VERSION
# with $PGPLANE_TOOLS_DIR/bin/tofu pointing at it. The module and build
# caches are kept under $PGPLANE_TOOLS_DIR/go, so a rebuild (another
# version) reuses them. Idempotent; a cold build takes minutes on 2 cores.
# Prints the binary's path on stdout; progress on stderr.
set -euo pipefail
version=${TOFU_VERSION:-1.12.6}
tools=${PGPLANE_TOOLS_DIR:-$HOME/.cache/pgplane}
out=$tools/tofu-$version
mkdir -p "$tools/bin"
if [ ! -x "$out" ]; then
  echo "setup-tofu: building OpenTofu $version into $out — takes minutes on a cold cache" >&2
  start=$(date +%s)
  export GOMODCACHE=$tools/go/mod GOCACHE=$tools/go/build GOFLAGS="-trimpath -mod=readonly" CGO_ENABLED=0
  module=github.com/opentofu/opentofu
  # The module has replace directives, which `go install module@version`
  # refuses: build inside the downloaded module instead.
  src=$(go mod download -json "$module@v$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || { echo "setup-tofu: go mod download $module@v$version gave no directory" >&2; exit 1; }
  (cd "$src" && nice -n 10 go build \
    -ldflags="-s -w -X $module/version.dev=no" -o "$out.tmp" ./cmd/tofu)
  mv "$out.tmp" "$out"
  echo "setup-tofu: built in $(( $(date +%s) - start ))s" >&2
fi
ln -sfn "$out" "$tools/bin/tofu"
"$tools/bin/tofu" version >/dev/null 2>&1 \
  || { echo "setup-tofu: $out does not run" >&2; "$tools/bin/tofu" version >&2; exit 1; }
# Other versions.
find "$tools" -maxdepth 1 -type f -name 'tofu-*' ! -path "$out" -delete
echo "$out"
