#!/usr/bin/env bash
# Build the images the cluster itself needs, from scratch and locally (none is ever pulled), and
# load them into containerd: the pod sandbox ("pause") image and CoreDNS. Usage: cluster-images.sh BIN
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$HACK_DIR/image-lib.sh"
BIN=$1
pause_bin=$CACHE/bin/pause-$(sha256sum "$HACK_DIR/images/pause.c" | cut -c1-12)
if [ ! -x "$pause_bin" ]; then
  mkdir -p "$CACHE/bin"
  gcc -static -Os -o "$pause_bin.tmp" "$HACK_DIR/images/pause.c" && strip "$pause_bin.tmp" && mv "$pause_bin.tmp" "$pause_bin"
fi
scratch_image "$PAUSE_IMAGE" "$pause_bin" /pause --entrypoint '["/pause"]' --user 65535:65535
scratch_image "$COREDNS_IMAGE" "$BIN/coredns" /coredns --entrypoint '["/coredns"]' --user 65534:65534
load_image "$PAUSE_IMAGE"
load_image "$COREDNS_IMAGE"
