#!/usr/bin/env bash
# Build the project's images from ./Dockerfile with buildah on the locally built base image, and
# load them into the local cluster's containerd when it runs. Layers are cached by buildah and
# pip's downloads under $CACHE/pip, so a build after a code change takes seconds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$HACK_DIR/image-lib.sh"
"$HACK_DIR/base-image.sh"
mkdir -p "$CACHE/pip"
# Builds reach PyPI the way this machine does: its CA bundle (which may hold a proxy's CA) is
# mounted for pip during the build only, never baked into an image.
pip_conf=$CACHE/pip/build-pip.conf
printf '[global]\ncert = /etc/ssl/certs/host-ca-bundle.crt\ndisable-pip-version-check = true\n' >"$pip_conf"
for target in operator worker; do
  log "building securemodel-$target:dev"
  buildah bud -q --layers --network host --target "$target" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -v "$CACHE/pip:/root/.cache/pip" \
    -v "$pip_conf:/etc/pip.conf:ro" -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/host-ca-bundle.crt:ro \
    -t "securemodel-$target:dev" "$REPO_ROOT" >/dev/null
done
if [ -S "$CONTAINERD_SOCK" ]; then
  load_image securemodel-operator:dev
  load_image securemodel-worker:dev
else
  log "the cluster is not running: images built, not loaded (make cluster, then make images)"
fi
