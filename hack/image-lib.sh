# Moving images from buildah's storage into the cluster's containerd. Sourced.
# shellcheck shell=bash

# load_image REF : import buildah image REF into containerd's k8s.io namespace, unless containerd
# already holds that exact image. The archive is a temporary file: disk is scarce here.
load_image() {
  local ref=$1 id name archive
  id=$(buildah inspect --type image --format '{{.FromImageID}}' "$ref")
  name=$(echo "$ref" | tr '/:' '__')
  # A record beside containerd's root says which image id it holds.
  if [ "$(cat "$IMAGE_STORE/loaded/$name" 2>/dev/null)" = "$id" ] && ctr_k8s images ls -q | grep -q "[/]${ref##*/}\$"; then
    return
  fi
  log "loading $ref into containerd"
  mkdir -p "$CACHE/images"
  rm -f "$CACHE/images/$name".*.tar  # left by an interrupted load
  archive=$(mktemp "$CACHE/images/$name.XXXX.tar")
  rm -f "$archive"  # buildah writes the archive itself
  buildah push -q "$ref" "docker-archive:$archive:$ref" >/dev/null
  ctr_k8s images import "$archive" >/dev/null
  rm -f "$archive"
  mkdir -p "$IMAGE_STORE/loaded" && echo "$id" >"$IMAGE_STORE/loaded/$name"
}

# scratch_image REF FILE DEST [buildah config args...] : a one-binary image built from scratch.
scratch_image() {
  local ref=$1 file=$2 dest=$3; shift 3
  local sum; sum=$(sha256sum "$file" | cut -c1-16)
  if buildah inspect --type image --format "{{.OCIv1.Config.Labels}}" "$ref" 2>/dev/null | grep -q "securemodel.source:$sum"; then return; fi
  local c; c=$(buildah from scratch)
  buildah copy -q "$c" "$file" "$dest" >/dev/null
  buildah config --label "securemodel.source=$sum" "$@" "$c"
  buildah commit --rm -q "$c" "$ref" >/dev/null
}
