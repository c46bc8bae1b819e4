#!/usr/bin/env bash
# Writes the container images the tests' Kubernetes node runs, offline (no
# registry, no container engine): docker-archive tars (manifest.json, an image
# config, one layer tar) made from rootfs folders, for `ctr images import`.
#
#   pgplane/pause:test    the pod sandbox: kube/images/pause.c, built with gcc -static
#   pgplane/instance:15   the instance, laid out as examples/kubernetes/Dockerfile's
#                         `instance` stage: the host's PostgreSQL 15
#                         (/usr/lib/postgresql/15, /usr/share/postgresql/15 and
#                         the libraries ldd lists), pgbackrest, the given pgplane
#                         binary at /usr/local/bin/pgplane, user postgres (uid and
#                         gid 999), entrypoint `pgplane agent`; without the LLVM JIT
#
# Usage: scripts/build-images.sh PGPLANE_BINARY
# Cached by content hash (this script, pause.c, the binary, the installed
# Debian packages) under ${PGPLANE_TOOLS_DIR:-~/.cache/pgplane}/images/;
# older builds of the same image are removed. Prints one line per image on
# stdout: `NAME TAR`. Progress on stderr.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pgplane=${1:?usage: build-images.sh PGPLANE_BINARY}
[ -x "$pgplane" ] || { echo "build-images: $pgplane is not an executable" >&2; exit 1; }
pgplane=$(realpath "$pgplane")
tools=${PGPLANE_TOOLS_DIR:-$HOME/.cache/pgplane}
out=$tools/images
mkdir -p "$out"
# One build at a time (concurrent test processes ask for the same images).
exec 9>"$out/.lock"
flock 9
pg=15
uid=999
path=/usr/lib/postgresql/$pg/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

packages=$(dpkg-query -W -f '${Package} ${Version}\n' | sha256sum | cut -c1-16)
self=$(cat "$0" "$root/kube/images/pause.c" | sha256sum | cut -c1-16)

# write_archive NAME:TAG ROOTFS CONFIG_JSON TAR: one-layer docker-archive.
write_archive() {
  local tag=$1 rootfs=$2 config=$3 tar=$4 work
  work=$(mktemp -d "$out/.work.XXXXXX")
  tar --sort=name --mtime=@0 --numeric-owner -C "$rootfs" -cf "$work/layer.tar" .
  local diff
  diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  mkdir "$work/$diff"
  mv "$work/layer.tar" "$work/$diff/layer.tar"
  printf '%s' "$config" | sed "s/@DIFF_ID@/sha256:$diff/" >"$work/config.json"
  local cfg
  cfg=$(sha256sum "$work/config.json" | cut -d' ' -f1)
  mv "$work/config.json" "$work/$cfg.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$cfg" "$tag" "$diff" >"$work/manifest.json"
  tar --sort=name --mtime=@0 --numeric-owner -C "$work" -cf "$tar.tmp" manifest.json "$cfg.json" "$diff"
  mv "$tar.tmp" "$tar"
  rm -rf "$work"
}

# image_config USER ENV_JSON ENTRYPOINT_JSON EXPOSED_JSON
image_config() {
  printf '{"architecture":"amd64","os":"linux","config":{"User":"%s","Env":%s,"Entrypoint":%s,"ExposedPorts":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["@DIFF_ID@"]}}' "$1" "$2" "$3" "$4"
}

# Removes the other builds of image $1, keeping $2.
prune() {
  find "$out" -maxdepth 1 -name "$1-*.tar" ! -path "$2" -delete
}

# --- pause -------------------------------------------------------------------
pause_tar=$out/pause-$self.tar
if [ ! -f "$pause_tar" ]; then
  echo "build-images: pause → $pause_tar" >&2
  rootfs=$(mktemp -d "$out/.rootfs.XXXXXX")
  gcc -static -Os -s -o "$rootfs/pause" "$root/kube/images/pause.c"
  write_archive pgplane/pause:test "$rootfs" "$(image_config 65535 '[]' '["/pause"]' '{}')" "$pause_tar"
  rm -rf "$rootfs"
fi
prune pause "$pause_tar"

# --- instance ----------------------------------------------------------------
binhash=$(sha256sum "$pgplane" | cut -c1-16)
instance_hash=$(printf '%s %s %s\n' "$self" "$packages" "$binhash" | sha256sum | cut -c1-16)
instance_tar=$out/instance-$instance_hash.tar
if [ ! -f "$instance_tar" ]; then
  echo "build-images: instance (pgplane $pgplane) → $instance_tar" >&2
  start=$(date +%s)
  rootfs=$(mktemp -d "$out/.rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  cd "$rootfs"
  mkdir -p usr/bin usr/sbin usr/lib usr/lib64 usr/local/bin usr/share etc tmp run var/lib/postgresql/data \
    var/log proc sys dev "usr/lib/postgresql" "usr/share/postgresql"
  ln -s usr/bin bin && ln -s usr/lib lib && ln -s usr/lib64 lib64 && ln -s usr/sbin sbin
  ln -s ../run var/run
  chmod 1777 tmp
  cp -a "/usr/lib/postgresql/$pg" usr/lib/postgresql/
  # Without the LLVM JIT provider (and LLVM, 130 MB of libraries): the server
  # runs without JIT when llvmjit.so is absent.
  rm -rf usr/lib/postgresql/$pg/lib/llvmjit*.so usr/lib/postgresql/$pg/lib/bitcode
  cp -a "/usr/share/postgresql/$pg" usr/share/postgresql/
  # Debian links some extensions' files through /etc/alternatives, which the
  # image has not: copy what such absolute links point to.
  find usr/lib/postgresql usr/share/postgresql -type l -lname '/*' | while read -r link; do
    if [ -e "/$link" ]; then cp -L --remove-destination "/$link" "$link"; else rm -f "$link"; fi
  done
  cp -a /usr/share/zoneinfo usr/share/
  # PostGIS's coordinate systems (proj.db) and GDAL's data, when installed.
  for d in /usr/share/proj /usr/share/gdal; do
    if [ -d "$d" ]; then cp -a "$d" usr/share/; fi
  done
  cp -L /usr/bin/pgbackrest usr/bin/
  cp -L /bin/sh usr/bin/sh
  objcopy --strip-debug "$pgplane" usr/local/bin/pgplane
  # The shared libraries of every ELF file in the image, at the paths the
  # loader looks them up by (/lib and /lib64 are links into /usr, as on the host).
  find usr -type f -perm -u+x -o -type f -name '*.so*' | while read -r f; do
    { ldd "$f" 2>/dev/null || true; } | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'
  done | sort -u | while read -r lib; do
    dest=${lib#/usr}
    dest=usr$dest
    [ -e "$dest" ] || { mkdir -p "$(dirname "$dest")"; cp -L "$lib" "$dest"; }
  done
  printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:%s:%s:PostgreSQL administrator:/var/lib/postgresql:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' "$uid" "$uid" >etc/passwd
  printf 'root:x:0:\npostgres:x:%s:\nnogroup:x:65534:\n' "$uid" >etc/group
  printf 'passwd: files\ngroup: files\nhosts: files dns\n' >etc/nsswitch.conf
  mkdir -p run/postgresql
  chown -R "$uid:$uid" var/lib/postgresql run/postgresql
  chmod 2775 run/postgresql
  cd - >/dev/null
  write_archive pgplane/instance:15 "$rootfs" \
    "$(image_config postgres "[\"PATH=$path\"]" '["pgplane","agent"]' '{"5432/tcp":{}}')" "$instance_tar"
  rm -rf "$rootfs"
  trap - EXIT
  echo "build-images: instance built in $(( $(date +%s) - start ))s, $(du -m "$instance_tar" | cut -f1) MB" >&2
fi
prune instance "$instance_tar"
echo "pgplane/pause:test $pause_tar"
echo "pgplane/instance:15 $instance_tar"
