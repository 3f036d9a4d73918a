#!/usr/bin/env bash
# Build the local cluster's binaries from the Go module proxy, at the versions pinned in
# hack/versions.env, into a cache outside the work tree keyed by those versions:
#   $SECUREMODEL_CACHE/bin/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-.../{kube-apiserver,...,etcd,coredns,helm}
#   $SECUREMODEL_CACHE/bin/kube-router-$KUBE_ROUTER_VERSION/kube-router, linked from the first as kube-router
# Prints the first directory. A second run with the same versions only prints it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${SECUREMODEL_CACHE:-/var/cache/securemodel}
out="$cache/bin/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-coredns-$COREDNS_VERSION-helm-$HELM_VERSION"
kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
all=("${kube_cmds[@]}" etcd coredns helm)
# kube-router has a directory of its own, so that pinning another version of it rebuilds only it.
router="$cache/bin/kube-router-$KUBE_ROUTER_VERSION"
router_link="../kube-router-$KUBE_ROUTER_VERSION/kube-router"

complete() {
  for b in "${all[@]}"; do [ -x "$out/$b" ] || return 1; done
  [ -x "$router/kube-router" ] && [ "$(readlink "$out/kube-router")" = "$router_link" ]
}
if complete; then echo "$out"; exit 0; fi

mkdir -p "$out" "$cache/gobuild"
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
export GOCACHE="$cache/go-build" GOMODCACHE="$cache/go-mod"
log() { echo "build-binaries: $*" >&2; }

# A throwaway module per tool: each pins its own dependency graph.
mkmod() {  # dir module-line...
  local dir=$1; shift
  rm -rf "$dir"; mkdir -p "$dir"
  printf '%s\n' "module securemodel.local/build" "" "go 1.24" "" "$@" >"$dir/go.mod"
}

build_kube() {
  local dir="$cache/gobuild/kube-$KUBE_VERSION" minor=${KUBE_VERSION#v1.}
  local staging_version="v0.$minor"
  local mod="$cache/gobuild/kubernetes-$KUBE_VERSION.mod"
  [ -s "$mod" ] || curl -fsSL "https://proxy.golang.org/k8s.io/kubernetes/@v/$KUBE_VERSION.mod" -o "$mod"
  # Every staging module k8s.io/kubernetes points at ./staging is published as v0.<minor>.
  local replaces
  replaces=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$mod" | grep -v sample-)
  mkmod "$dir" "require k8s.io/kubernetes $KUBE_VERSION" "" "replace (" "$replaces" ")"
  local major=1 kminor=${minor%%.*}
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$kminor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  (cd "$dir"
   for c in "${kube_cmds[@]}"; do
     [ -x "$out/$c" ] && continue
     log "building $c $KUBE_VERSION"
     go build -trimpath -ldflags "$ldflags" -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c"
     mv "$out/$c.tmp" "$out/$c"
   done)
}

build_etcd() {
  [ -x "$out/etcd" ] && return
  local dir="$cache/gobuild/etcd-$ETCD_VERSION"
  mkmod "$dir" "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" "" "replace (" \
    "	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION" \
    "	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION" \
    "	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION" \
    "	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION" ")"
  log "building etcd $ETCD_VERSION"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$out/etcd.tmp" "$out/etcd")
}

build_plain() {  # name module version package
  [ -x "$out/$1" ] && return
  local dir="$cache/gobuild/$1-$3"
  mkmod "$dir" "require $2 $3"
  log "building $1 $3"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$out/$1.tmp" "$4" && mv "$out/$1.tmp" "$out/$1")
}

build_kube_router() {
  if [ ! -x "$router/kube-router" ]; then
    local dir="$cache/gobuild/kube-router-$KUBE_ROUTER_VERSION" module=github.com/cloudnativelabs/kube-router/v2
    local ldflags="-s -w -X $module/pkg/version.Version=$KUBE_ROUTER_VERSION"
    ldflags+=" -X $module/pkg/version.BuildDate=1970-01-01T00:00:00Z"
    mkmod "$dir" "require $module $KUBE_ROUTER_VERSION"
    mkdir -p "$router"
    log "building kube-router $KUBE_ROUTER_VERSION"
    (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$router/kube-router.tmp" "$module/cmd/kube-router" \
      && mv "$router/kube-router.tmp" "$router/kube-router")
  fi
  ln -sfn "$router_link" "$out/kube-router"
}

build_etcd
build_kube
build_plain coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns
build_plain helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
build_kube_router
complete
# The binaries are the cache; Go's build cache (several GB) would only serve another version.
rm -rf "$GOCACHE"
echo "$out"
