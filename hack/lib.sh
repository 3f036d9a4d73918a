# Shared settings of the hack/ scripts. Sourced, never run.
# shellcheck shell=bash
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"
export SECUREMODEL_CACHE=${SECUREMODEL_CACHE:-/var/cache/securemodel}
CACHE=$SECUREMODEL_CACHE
# The cluster's state lives in one fixed place: there is one cluster per machine.
STATE=${SECUREMODEL_CLUSTER_STATE:-/var/lib/securemodel-cluster}
CONTAINERD_SOCK=$STATE/run/containerd/containerd.sock
# containerd's root, the images loaded into the cluster (7 GB with torch), is a cache: it outlives the
# cluster's state, so a cluster brought up again does not import every image again (2-3 minutes).
IMAGE_STORE=$CACHE/containerd
NODE_NAME=securemodel-node
NODE_IP=10.244.0.1          # the bridge's address: the node's InternalIP and the pods' gateway
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
BRIDGE=smbr0
CLUSTER_DOMAIN=cluster.local
PAUSE_IMAGE=securemodel.local/pause:1.0
COREDNS_IMAGE=securemodel.local/coredns:$COREDNS_VERSION
BASE_IMAGE=securemodel.local/python-base:bookworm

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# Stop a component the cluster scripts started (its pid is in $STATE/pids): SIGTERM, then SIGKILL after 10 s.
stop_pid() {  # name
  local f=$STATE/pids/$1.pid p
  p=$(cat "$f" 2>/dev/null) || return 0
  if kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$f"
}

# Wait until a command succeeds, or fail after $1 seconds naming what was awaited.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
    sleep 1
  done
}
