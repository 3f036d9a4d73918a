#!/usr/bin/env bash
# Build the Debian bookworm + Python 3.11 rootfs that the project's images start from, with
# debootstrap (Debian's packages only: no image is pulled), and commit it into buildah's storage
# as $BASE_IMAGE. The rootfs tarball is cached by suite and package list.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
packages=python3,python3-venv,ca-certificates,libgomp1
key=$(echo "bookworm $packages" | sha256sum | cut -c1-12)
tarball=$CACHE/rootfs/bookworm-python-$key.tar
if buildah inspect --type image --format "{{.OCIv1.Config.Labels}}" "$BASE_IMAGE" 2>/dev/null | grep -q "securemodel.rootfs:$key"; then
  exit 0
fi
if [ ! -s "$tarball" ]; then
  log "debootstrap bookworm ($packages)"
  tmp=$(mktemp -d "$CACHE/rootfs-build.XXXX")
  trap 'rm -rf "$tmp"' EXIT
  debootstrap --variant=minbase --include="$packages" bookworm "$tmp/root" http://deb.debian.org/debian >"$tmp/log" 2>&1 \
    || { tail -20 "$tmp/log"; die "debootstrap failed"; }
  rm -rf "$tmp/root/var/cache/apt/archives/"*.deb "$tmp/root/var/lib/apt/lists/"*
  mkdir -p "$CACHE/rootfs"
  tar -C "$tmp/root" --numeric-owner -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
fi
log "committing $BASE_IMAGE"
ctr=$(buildah from scratch)
mnt=$(buildah mount "$ctr")
tar -C "$mnt" --numeric-owner -xf "$tarball"
buildah umount "$ctr" >/dev/null
buildah config --label "securemodel.rootfs=$key" --env LANG=C.UTF-8 --cmd /bin/bash "$ctr"
buildah commit --rm -q "$ctr" "$BASE_IMAGE" >/dev/null
