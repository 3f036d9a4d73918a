#!/usr/bin/env bash
# A real GitOps loop on the local cluster: Flux's source-controller and kustomize-controller as host
# processes (like kube-router), and a Git server on the node that serves bare repositories over smart
# HTTP (hack/git-http.py), from which Flux syncs.
#   hack/flux.sh build   build the controllers (nothing else); prints their directory:
#                        $SECUREMODEL_CACHE/bin/flux-sc-$FLUX_SOURCE_CONTROLLER_VERSION-kc-$FLUX_KUSTOMIZE_CONTROLLER_VERSION
#   hack/flux.sh         on a running cluster (make cluster): build, install Flux's CRDs and the
#                        controllers' roles, start the Git server and both controllers; idempotent.
# The Git server: http://127.0.0.1:$GIT_HTTP_PORT/<name>.git for every bare repository under
# $STATE/git; securemodel.git exists from the start. Anyone on the node may push: it listens on
# 127.0.0.1 only, and the cluster is a throwaway one.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$HACK_DIR/flux.env"
out="$CACHE/bin/flux-sc-$FLUX_SOURCE_CONTROLLER_VERSION-kc-$FLUX_KUSTOMIZE_CONTROLLER_VERSION"

built() { [ -x "$out/source-controller" ] && [ -x "$out/kustomize-controller" ] && [ -d "$out/crds" ]; }

# The controllers' go.mod replace some dependencies and their own api module (./api): `go install
# module@version` refuses replace directives, so each builds in a throwaway module that requires it
# and repeats its replaces of published modules (the api module is published at the same version),
# plus the given extra replaces.
build_controller() {  # name version [extra replace line...]
  local name=$1 version=$2 module=github.com/fluxcd/$1
  shift 2
  [ -x "$out/$name" ] && return
  local dir="$CACHE/gobuild/flux-$name-$version" replaces
  mkdir -p "$CACHE/gobuild"
  rm -rf "$dir"; mkdir -p "$dir"
  go mod download -json "$module@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p' | xargs cat >"$dir/upstream.mod"
  # Single-line and block replaces whose target is a published module (not a ./ path).
  replaces=$(awk '/^replace \($/ {block=1; next} block && /^\)/ {block=0; next}
                  { line=$0; if (!block && !sub(/^replace /, "", line)) next }
                  line ~ /=>/ && line !~ /=> *\./ { sub(/^[ \t]+/, "", line); print "\t" line }' "$dir/upstream.mod")
  printf '%s\n' "module securemodel.local/build" "" "go 1.26" "" "require $module $version" "" \
    "replace (" "$replaces" "${@/#/$'\t'}" ")" >"$dir/go.mod"
  log "building Flux $name $version (nice 19)"
  (cd "$dir" && nice -n 19 go build -p 2 -ldflags "-s -w" -o "$out/$name.tmp" "$module" \
    && mv "$out/$name.tmp" "$out/$name")
}

# Flux's CRDs come from the controllers' module zips (config/crd/bases), as downloaded by the build.
copy_crds() {
  [ -d "$out/crds" ] && return
  mkdir -p "$out/crds.tmp"
  cp "$GOMODCACHE/github.com/fluxcd/source-controller@$FLUX_SOURCE_CONTROLLER_VERSION"/config/crd/bases/*.yaml \
    "$GOMODCACHE/github.com/fluxcd/kustomize-controller@$FLUX_KUSTOMIZE_CONTROLLER_VERSION"/config/crd/bases/*.yaml \
    "$out/crds.tmp/"
  chmod -R u+w "$out/crds.tmp"
  mv "$out/crds.tmp" "$out/crds"
}

build() {
  built && return
  mkdir -p "$out"
  export GOFLAGS="-mod=mod -buildvcs=false -trimpath" CGO_ENABLED=0 GOTOOLCHAIN=local
  export GOCACHE="$CACHE/go-build-flux" GOMODCACHE="$CACHE/go-mod"
  # The module proxy serves no github.com/fluxcd/pkg/artifact v0.18.3, which source-controller v1.9.6
  # asks for: v0.18.0, a patch release of the same minor version, builds in its place.
  build_controller source-controller "$FLUX_SOURCE_CONTROLLER_VERSION" \
    "github.com/fluxcd/pkg/artifact => github.com/fluxcd/pkg/artifact v0.18.0"
  build_controller kustomize-controller "$FLUX_KUSTOMIZE_CONTROLLER_VERSION"
  copy_crds
  # The binaries are the cache; Go's build cache would only serve another version.
  rm -rf "$GOCACHE"
}

if [ "${1:-}" = build ]; then build; echo "$out"; exit 0; fi

[ -s "$STATE/admin.kubeconfig" ] || die "no cluster: run make cluster first"
build
source "$HACK_DIR/pki.sh"
PKI=$STATE/pki
BIN=$("$HACK_DIR/build-binaries.sh")
kubectl() { "$BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }
running() { local p; p=$(cat "$STATE/pids/$1.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }
start() {  # name command... : run detached in its own session, log and pid under $STATE
  local name=$1; shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/pids/$name.pid"
}
fail_with_log() { tail -n 30 "$STATE/logs/$1.log" >&2; die "$1 did not come up (log: $STATE/logs/$1.log)"; }

log "Flux CRDs and the controllers' roles"
kubectl apply --server-side --force-conflicts -f "$out/crds" >/dev/null
kubectl wait --for=condition=Established --timeout=60s -f "$out/crds" >/dev/null
kubectl apply -f "$HACK_DIR/cluster/flux.yaml" >/dev/null

log "Git server: http://127.0.0.1:$GIT_HTTP_PORT/ serves $STATE/git/*.git"
mkdir -p "$STATE/git"
[ -d "$STATE/git/securemodel.git" ] || git init -q --bare --initial-branch=main "$STATE/git/securemodel.git"
python=${PYTHON:-$REPO_ROOT/.venv/bin/python}
[ -x "$python" ] || die "the Git server needs the project's virtual environment (aiohttp): run make venv, or set PYTHON"
running git-http || start git-http "$python" "$HACK_DIR/git-http.py" --root "$STATE/git" --port "$GIT_HTTP_PORT"
wait_for 30 "the Git server" env GIT_TERMINAL_PROMPT=0 git ls-remote "http://127.0.0.1:$GIT_HTTP_PORT/securemodel.git" || fail_with_log git-http

# Both controllers run on the node with identities of their own (hack/cluster/flux.yaml), watch every
# namespace, and run alone (no leader election). source-controller keeps artifacts under
# $STATE/flux/artifacts and serves them to kustomize-controller on 127.0.0.1.
sign flux-source-controller "/CN=securemodel:flux-source-controller"
sign flux-kustomize-controller "/CN=securemodel:flux-kustomize-controller"
mkdir -p "$STATE/flux/artifacts"
common=(--watch-all-namespaces=true --enable-leader-election=false --log-encoding=console --log-level=info)
if ! running source-controller; then
  log "Flux source-controller $FLUX_SOURCE_CONTROLLER_VERSION"
  kubeconfig "$STATE/flux-source-controller.kubeconfig" flux-source-controller
  start source-controller env RUNTIME_NAMESPACE=flux-system KUBECONFIG="$STATE/flux-source-controller.kubeconfig" \
    "$out/source-controller" "${common[@]}" \
    --storage-path="$STATE/flux/artifacts" \
    --storage-addr="127.0.0.1:$SOURCE_CONTROLLER_STORAGE_PORT" \
    --storage-adv-addr="127.0.0.1:$SOURCE_CONTROLLER_STORAGE_PORT" \
    --metrics-addr="127.0.0.1:$SOURCE_CONTROLLER_METRICS_PORT" \
    --health-addr="127.0.0.1:$SOURCE_CONTROLLER_HEALTH_PORT"
fi
if ! running kustomize-controller; then
  log "Flux kustomize-controller $FLUX_KUSTOMIZE_CONTROLLER_VERSION"
  kubeconfig "$STATE/flux-kustomize-controller.kubeconfig" flux-kustomize-controller
  start kustomize-controller env RUNTIME_NAMESPACE=flux-system KUBECONFIG="$STATE/flux-kustomize-controller.kubeconfig" \
    "$out/kustomize-controller" "${common[@]}" \
    --metrics-addr="127.0.0.1:$KUSTOMIZE_CONTROLLER_METRICS_PORT" \
    --health-addr="127.0.0.1:$KUSTOMIZE_CONTROLLER_HEALTH_PORT"
fi
wait_for 60 "source-controller ready" curl -fsS "http://127.0.0.1:$SOURCE_CONTROLLER_HEALTH_PORT/readyz" \
  || fail_with_log source-controller
wait_for 60 "kustomize-controller ready" curl -fsS "http://127.0.0.1:$KUSTOMIZE_CONTROLLER_HEALTH_PORT/readyz" \
  || fail_with_log kustomize-controller
log "Flux ready: GitRepository url http://127.0.0.1:$GIT_HTTP_PORT/securemodel.git"
