#!/usr/bin/env bash
# Build the project's images from ./Dockerfile with buildah on the locally built base image, and
# load them into the local cluster's containerd when it runs. Dependencies come from the wheelhouse
# (hack/wheelhouse.sh) that the virtualenv uses too; buildah caches layers, so a build after a code
# change takes seconds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$HACK_DIR/image-lib.sh"
"$HACK_DIR/base-image.sh"
"$HACK_DIR/wheelhouse.sh" worker dev
for target in operator worker; do
  log "building securemodel-$target:dev"
  previous=$(buildah inspect --type image --format '{{.FromImageID}}' "securemodel-$target:dev" 2>/dev/null || true)
  buildah bud -q --layers --network host --target "$target" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "PIP_INSTALL_FLAGS=--no-index --find-links /wheels" \
    -v "$CACHE/wheelhouse:/wheels:ro" \
    -t "securemodel-$target:dev" "$REPO_ROOT" >/dev/null
  # The image it replaces goes (its layers stay while the new image or the layer cache uses them).
  current=$(buildah inspect --type image --format '{{.FromImageID}}' "securemodel-$target:dev")
  [ -z "$previous" ] || [ "$previous" = "$current" ] || buildah rmi "$previous" >/dev/null 2>&1 || true
done
# The e2e tests' custom user image (tests/e2e/forger): a small layer on the operator image.
buildah bud -q --layers --network host --build-arg FROM_IMAGE=securemodel-operator:dev \
  -t securemodel-forger:test -f "$REPO_ROOT/tests/e2e/forger/Containerfile" "$REPO_ROOT/tests/e2e/forger" >/dev/null
if [ -S "$CONTAINERD_SOCK" ]; then
  load_image securemodel-operator:dev
  load_image securemodel-worker:dev
  load_image securemodel-forger:test
else
  log "the cluster is not running: images built, not loaded (make cluster, then make images)"
fi
