# Moving images from buildah's storage into the cluster's containerd. Sourced.
# shellcheck shell=bash

# load_image REF : import buildah image REF into containerd's k8s.io namespace, unless containerd
# already holds that exact image. The exported archive is cached by image id.
load_image() {
  local ref=$1 id archive
  id=$(buildah inspect --type image --format '{{.FromImageID}}' "$ref")
  local name; name=$(echo "$ref" | tr '/:' '__')
  # containerd lives as long as $STATE: a record there says which image id it holds.
  [ "$(cat "$STATE/images/$name" 2>/dev/null)" = "$id" ] && return
  archive=$CACHE/images/$name-${id:0:16}.tar
  if [ ! -s "$archive" ]; then
    mkdir -p "$CACHE/images"
    rm -f "$CACHE/images/$name"-*.tar
    buildah push -q "$ref" "docker-archive:$archive.tmp:$ref" >/dev/null
    mv "$archive.tmp" "$archive"
  fi
  log "loading $ref into containerd"
  ctr_k8s images import "$archive" >/dev/null
  mkdir -p "$STATE/images" && echo "$id" >"$STATE/images/$name"
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
