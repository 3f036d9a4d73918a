#!/usr/bin/env bash
# Bring up a real single-node Kubernetes on this machine and return once it is usable:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd + runc, kubelet,
# kube-proxy, kube-router (NetworkPolicy only), CoreDNS and a default hostPath StorageClass.
# Idempotent: on a healthy running cluster it only starts kube-router and Flux (hack/flux.sh) if they are not running,
# refreshes .cluster/kubeconfig and returns.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$HACK_DIR/pki.sh"
BIN=$("$HACK_DIR/build-binaries.sh")
PKI=$STATE/pki
KUBECONFIG_OUT=$REPO_ROOT/.cluster/kubeconfig
kubectl() { "$BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }
components=(volumes etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

running() { local p; p=$(cat "$STATE/pids/$1.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }
node_ready() {
  kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}
healthy() {
  local c
  for c in "${components[@]}"; do running "$c" || return 1; done
  kubectl get --raw /readyz >/dev/null 2>&1 && node_ready \
    && kubectl -n kube-system rollout status deployment/coredns --timeout=1s >/dev/null 2>&1
}
publish_kubeconfig() {
  mkdir -p "$(dirname "$KUBECONFIG_OUT")"
  cp "$STATE/admin.kubeconfig" "$KUBECONFIG_OUT"
  chmod 600 "$KUBECONFIG_OUT"
  ln -sfn "$BIN" "$(dirname "$KUBECONFIG_OUT")/bin"   # kubectl and helm of the cluster's version
}

start() {  # name command... : run detached in its own session, log and pid under $STATE
  local name=$1; shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/pids/$name.pid"
}
fail_with_log() { tail -n 30 "$STATE/logs/$1.log" >&2; die "$1 did not come up (log: $STATE/logs/$1.log)"; }

# The NetworkPolicy engine: kube-router's network policy controller alone (no routing, no service
# proxy: the CNI bridge and kube-proxy do those), as a host process with its own identity. It
# needs the node registered. It holds no state of its own: a restarted one rebuilds every rule.
kube_router_ready() {
  running kube-router && grep -q "Starting network policy controller full sync" "$STATE/logs/kube-router.log"
}
start_kube_router() {
  running kube-router && return
  command -v ipset >/dev/null || die "kube-router needs ipset: run make deps"
  log "kube-router $KUBE_ROUTER_VERSION: NetworkPolicy enforcement"
  sign kube-router "/CN=securemodel:kube-router"
  kubeconfig "$STATE/kube-router.kubeconfig" kube-router
  kubectl apply -f "$HACK_DIR/cluster/kube-router.yaml" >/dev/null
  start kube-router "$BIN/kube-router" --kubeconfig="$STATE/kube-router.kubeconfig" \
    --run-firewall=true --run-router=false --run-service-proxy=false --run-loadbalancer=false \
    --hostname-override="$NODE_NAME" --service-cluster-ip-range="$SERVICE_CIDR" \
    --health-port=0 --metrics-port=0
  wait_for 60 "kube-router's network policy controller" kube_router_ready || fail_with_log kube-router
}

if healthy; then
  start_kube_router
  "$HACK_DIR/flux.sh"
  publish_kubeconfig
  log "cluster already running; kubeconfig: $KUBECONFIG_OUT"
  exit 0
fi

# Whatever a stopped or killed cluster left behind (processes, mounts, links, rules) goes first.
"$HACK_DIR/cluster-down.sh"
mkdir -p "$STATE"/{pids,logs,etcd,kubelet,cni/net.d,run,containerd,resolv}
make_pki
for c in admin controller-manager scheduler kube-proxy kubelet-client; do
  kubeconfig "$STATE/$c.kubeconfig" "$c"
done

log "network: bridge $BRIDGE $NODE_IP, forwarding, guard rules"
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
ip link add "$BRIDGE" type bridge
ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
# Nothing of the cluster's address ranges may leave through another interface, and nothing from
# outside may reach them: pods and services exist on this machine only. The guard is in the mangle
# table, which the kernel runs before the filter table: kube-proxy and kube-router put ACCEPT rules
# first in the filter table's chains, and none of them may let traffic past the guard.
iptables -t mangle -N SECUREMODEL-GUARD
for range in "$POD_CIDR" "$SERVICE_CIDR"; do
  iptables -t mangle -A SECUREMODEL-GUARD ! -o "$BRIDGE" -d "$range" -m addrtype ! --dst-type LOCAL -j DROP
done
iptables -t mangle -I POSTROUTING -j SECUREMODEL-GUARD  # after DNAT: a Service's traffic by its pod
iptables -t mangle -I FORWARD -i "$BRIDGE" ! -o "$BRIDGE" -m addrtype ! --dst-type LOCAL -j DROP \
  -m comment --comment SECUREMODEL-GUARD
iptables -t mangle -I INPUT ! -i "$BRIDGE" -d "$NODE_IP" ! -s "$NODE_IP" -j DROP -m comment --comment SECUREMODEL-GUARD

log "volumes: $STATE/volumes seen through bindfs at /tmp/hostpath_pv"
# kube-controller-manager's hostPath provisioner makes every volume under /tmp/hostpath_pv with
# mode 0750, owned by root: pods that run as non-root (Pod Security "restricted") could not write
# them. bindfs shows the volumes' directories as writable to all; files keep their real owners.
mkdir -p "$STATE/volumes" /tmp/hostpath_pv
start volumes bindfs -f --perms=a+rwX --chmod-ignore --chown-ignore --chgrp-ignore "$STATE/volumes" /tmp/hostpath_pv
wait_for 10 "bindfs on /tmp/hostpath_pv" mountpoint -q /tmp/hostpath_pv || fail_with_log volumes

log "etcd $ETCD_VERSION"
# A throwaway single-node test cluster: fsync is skipped for speed, never do this in production.
start etcd "$BIN/etcd" --name default --data-dir "$STATE/etcd" --unsafe-no-fsync \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster default=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381
wait_for 60 "etcd health" curl -fsS http://127.0.0.1:2381/health || fail_with_log etcd

log "kube-apiserver $KUBE_VERSION"
start kube-apiserver "$BIN/kube-apiserver" \
  --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port=6443 \
  --etcd-servers=http://127.0.0.1:2379 \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,NodeRestriction,PodSecurity,ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook \
  --allow-privileged=true \
  --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --api-audiences="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-cluster-ip-range="$SERVICE_CIDR" --enable-aggregator-routing=true
wait_for 90 "kube-apiserver /readyz" kubectl get --raw /readyz || fail_with_log kube-apiserver

log "kube-controller-manager, kube-scheduler"
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" --cluster-cidr="$POD_CIDR" \
  --enable-hostpath-provisioner=true
# A pod the scheduler found unschedulable waits until an event of a kind that could help requeues it, or
# at most --pod-max-in-unschedulable-pods-duration. A train pod created while its artifacts PVC is not yet
# bound has, rarely, missed that event and waited the whole default of 5 minutes (seen once in a test run:
# created 23:35:01, scheduled 23:40:00). One minute here bounds that stall. The flag is deprecated, not yet
# removed (v1.34): a scheduler that refuses it fails its health check below.
start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --pod-max-in-unschedulable-pods-duration=60s
wait_for 30 "kube-scheduler /healthz" curl -fsk https://127.0.0.1:10259/healthz || fail_with_log kube-scheduler

log "containerd $(containerd --version | awk '{print $3}') with runc and CNI bridge"
cat >"$STATE/containerd/config.toml" <<TOML
version = 2
root = "$IMAGE_STORE/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine gives root no CAP_SYS_RESOURCE: no process may lower its oom_score_adj, so
  # containers get at least containerd's own instead of the kubelet's negative values.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/run/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
cat >"$STATE/cni/net.d/10-securemodel.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "securemodel",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON
start containerd containerd --config "$STATE/containerd/config.toml"
wait_for 30 "containerd" ctr_k8s version || fail_with_log containerd
# The kept root still lists the containers of the last cluster's pods, which went with its etcd: removed
# (with their snapshots), then containerd starts again so that its CRI plugin forgets them too.
leftover=$(ctr_k8s containers ls -q)
if [ -n "$leftover" ]; then
  log "removing $(wc -w <<<"$leftover") containers of the last cluster from $IMAGE_STORE"
  xargs -r ctr --address "$CONTAINERD_SOCK" --namespace k8s.io containers rm <<<"$leftover" >/dev/null
  stop_pid containerd
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for 30 "containerd" ctr_k8s version || fail_with_log containerd
fi
"$HACK_DIR/cluster-images.sh" "$BIN"

log "kubelet, kube-proxy"
# Pods resolve through CoreDNS only: nothing outside this machine is reachable.
echo "nameserver $DNS_SVC_IP" >"$STATE/resolv/resolv.conf"
cat >"$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
address: $NODE_IP
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$DNS_SVC_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $STATE/resolv/resolv.conf
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
# Containers must not ask for more open files than this machine's hard limit.
maxOpenFiles: 20000
# This machine's disk is shared and its free space varies widely: evict only when it is nearly
# full, and never garbage-collect images, which are built here and cannot be pulled back.
evictionHard: {memory.available: 200Mi, nodefs.available: 1Gi, imagefs.available: 1Gi}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# Mounted ConfigMaps and Secrets (the serving pods' allow-list and certificates) are refreshed on each pod
# sync: every 10 s here, so the tests that wait for them do not wait a minute; the default is 1 min.
syncFrequency: 10s
YAML
start kubelet "$BIN/kubelet" --config="$STATE/kubelet/config.yaml" \
  --kubeconfig="$STATE/kubelet-client.kubeconfig" --root-dir="$STATE/kubelet/root" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"
cat >"$STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0}
YAML
start kube-proxy "$BIN/kube-proxy" --config="$STATE/kube-proxy.yaml"
wait_for 120 "node $NODE_NAME Ready" node_ready || fail_with_log kubelet
start_kube_router

log "cluster add-ons: CoreDNS, default StorageClass"
sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" -e "s|@DNS_SVC_IP@|$DNS_SVC_IP|g" -e "s|@CLUSTER_DOMAIN@|$CLUSTER_DOMAIN|g" \
  "$HACK_DIR/cluster/addons.yaml" | kubectl apply -f - >/dev/null
kubectl -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null || fail_with_log kubelet
"$HACK_DIR/flux.sh"
publish_kubeconfig
log "cluster ready: kubectl --kubeconfig $KUBECONFIG_OUT get nodes"
