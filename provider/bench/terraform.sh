#!/usr/bin/env bash
# Benchmark: `terraform plan` / `apply` with N pgplane_instance resources
# against a control plane with the simulated runtime, next to the same
# Terraform's floor for N built-in `terraform_data` resources, in the same run.
#
#   bash provider/bench/terraform.sh            # N = 100
#   bash provider/bench/terraform.sh 100 1000   # several sizes
#
# Uses Terraform 1.15.5 (terraform_data needs Terraform ≥ 1.4), the test
# Postgres of scripts/test-db.sh (a fresh database per size), and the built
# binaries: target/debug/pgplane (PGPLANE_BIN) and the provider
# (PROVIDER_BIN, default target-provider/debug, else target/debug).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(100)
eval "$(bash scripts/test-db.sh)"
eval "$(bash scripts/setup-terraform.sh 2>/dev/null)"
tf="$PGPLANE_TOOLS_DIR/bin/terraform-1.15"
pgplane=${PGPLANE_BIN:-$root/target/debug/pgplane}
provider=${PROVIDER_BIN:-}
if [ -z "$provider" ]; then
  for p in "$root/target-provider/debug" "$root/target/debug"; do
    [ -x "$p/terraform-provider-pgplane" ] && { provider=$p/terraform-provider-pgplane; break; }
  done
fi
[ -x "$pgplane" ] || { echo "bench: $pgplane missing: cargo build --bin pgplane" >&2; exit 1; }
[ -x "${provider:-}" ] || { echo "bench: provider binary missing: cargo build -p provider" >&2; exit 1; }

work=$(mktemp -d /tmp/pgplane-tfbench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mirror=$work/mirror/registry.pgplane.io/pgplane/pgplane/0.1.0/linux_amd64
mkdir -p "$mirror"
ln -s "$provider" "$mirror/terraform-provider-pgplane_v0.1.0"
cat > "$work/terraform.tfrc" <<CFG
provider_installation {
  filesystem_mirror {
    path    = "$work/mirror"
    include = ["registry.pgplane.io/*/*"]
  }
  direct {
    exclude = ["registry.pgplane.io/*/*"]
  }
}
CFG
export TF_CLI_CONFIG_FILE=$work/terraform.tfrc TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 TF_INPUT=0

now() { date +%s.%N; }
# timed LABEL DIR ARGS… : runs terraform in DIR, prints seconds.
timed() {
  local dir=$1; shift
  local t0 t1
  t0=$(now)
  if ! (cd "$dir" && "$tf" "$@" >"$dir/last.log" 2>&1); then
    echo "bench: terraform $* failed in $dir:" >&2; tail -30 "$dir/last.log" >&2; exit 1
  fi
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}

header='terraform {
  required_providers {
    pgplane = { source = "registry.pgplane.io/pgplane/pgplane" }
  }
}'

results=()
for n in "${sizes[@]}"; do
  db="tfbench_${n}_$$"
  base=${DATABASE_URL%/*}
  psql "$DATABASE_URL" -qAtc "create database $db" >/dev/null
  url="$base/$db"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  token=$("$pgplane" token create --database-url "$url" --org bench 2>/dev/null)
  "$pgplane" server --database-url "$url" --listen "127.0.0.1:$port" --default-data-plane local \
    >"$work/server-$n.log" 2>&1 & pids+=($!)
  "$pgplane" conductor --database-url "$url" --runtime simulated \
    >"$work/conductor-$n.log" 2>&1 & pids+=($!)
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  export PGPLANE_ENDPOINT="http://127.0.0.1:$port" PGPLANE_TOKEN=$token

  pg=$work/pg-$n; floor=$work/floor-$n
  mkdir -p "$pg" "$floor"
  cat > "$pg/main.tf" <<TF
$header
provider "pgplane" {}
resource "pgplane_instance" "bench" {
  count  = $n
  name   = "bench-\${count.index}"
  config = { work_mem = "8MB" }
}
TF
  cat > "$floor/main.tf" <<TF
resource "terraform_data" "bench" {
  count = $n
  input = { name = "bench-\${count.index}", work_mem = "8MB" }
}
TF
  (cd "$pg" && "$tf" init -input=false >/dev/null)
  (cd "$floor" && "$tf" init -input=false >/dev/null)

  fp1=$(timed "$floor" plan -input=false -no-color)
  pp1=$(timed "$pg" plan -input=false -no-color)
  fa=$(timed "$floor" apply -auto-approve -input=false -no-color)
  pa=$(timed "$pg" apply -auto-approve -input=false -no-color)
  fp2=$(timed "$floor" plan -detailed-exitcode -input=false -no-color)
  pp2=$(timed "$pg" plan -detailed-exitcode -input=false -no-color)
  fd=$(timed "$floor" destroy -auto-approve -input=false -no-color)
  pd=$(timed "$pg" destroy -auto-approve -input=false -no-color)
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
  results+=("$(printf '%6s  %-28s %10ss %14ss %8s\n' "$n" "plan (all to create)" "$pp1" "$fp1" "$(ratio "$pp1" "$fp1")")")
  results+=("$(printf '%6s  %-28s %10ss %14ss %8s\n' "$n" "apply (create, wait for Up)" "$pa" "$fa" "$(ratio "$pa" "$fa")")")
  results+=("$(printf '%6s  %-28s %10ss %14ss %8s\n' "$n" "plan (refresh, no changes)" "$pp2" "$fp2" "$(ratio "$pp2" "$fp2")")")
  results+=("$(printf '%6s  %-28s %10ss %14ss %8s\n' "$n" "destroy (wait for Deleted)" "$pd" "$fd" "$(ratio "$pd" "$fd")")")
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=()
  psql "$DATABASE_URL" -qAtc "drop database $db" >/dev/null || true
done

echo "Terraform $("$tf" version | head -1 | cut -d' ' -f2), parallelism 10, simulated runtime; provider: $provider"
printf '%6s  %-28s %11s %15s %8s\n' "N" "operation" "pgplane" "terraform_data" "ratio"
printf '%s\n' "${results[@]}"
