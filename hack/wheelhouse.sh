#!/usr/bin/env bash
# One wheel cache for the virtual environment and the image builds: download every wheel that
# pyproject.toml's dependencies (core and the extras named as arguments) resolve to, for this
# machine's Python, into $CACHE/wheelhouse. Runs pip only when pyproject.toml changed.
# (The package index here answers with no-store, so pip's own HTTP cache keeps nothing.)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
wheels=$CACHE/wheelhouse
key=$( (cat "$REPO_ROOT/pyproject.toml"; echo "$*"; python3 --version) | sha256sum | cut -c1-16)
[ -f "$wheels/.done-$key" ] && exit 0
mkdir -p "$wheels"
req=$(mktemp)
trap 'rm -f "$req"' EXIT
python3 "$HACK_DIR/requirements-from-pyproject.py" "$REPO_ROOT/pyproject.toml" "$@" >"$req"
# The build backend of the package itself, so `pip install --no-index` can build it too.
python3 -c 'import tomllib,sys; print("\n".join(tomllib.load(open(sys.argv[1],"rb"))["build-system"]["requires"]))' \
  "$REPO_ROOT/pyproject.toml" >>"$req"
echo pip >>"$req"
log "downloading wheels for: core $* (into $wheels)"
python3 -m pip download -q --only-binary=:all: -d "$wheels" -r "$req"
touch "$wheels/.done-$key"
