#!/usr/bin/env bash
# Stop everything cluster-up.sh started, by pid, and remove what it created: pod processes,
# mounts, network namespaces, the bridge, iptables rules, the state directory and the hostPath
# volumes. containerd's images stay in $IMAGE_STORE, a cache like the others. Safe to run on a
# machine where nothing (or only leftovers of a killed cluster) exists.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# Every mount at or under a path, deepest first, as many times as mounts are stacked there. Read
# from /proc/mounts, not mountpoint(1): a bindfs that died leaves a mount that cannot even be stat'ed,
# and a killed cluster that was brought up twice leaves two mounts on /tmp/hostpath_pv.
unmount_all() {  # path
  local m
  while m=$(awk -v p="$1" '$2 == p || index($2, p "/") == 1 {print $2}' /proc/mounts | sort -r | head -n 1)
        [ -n "$m" ]; do
    umount "$m" 2>/dev/null || umount -l "$m" || die "cannot unmount $m"
  done
}

# The kubelet first, so nothing restarts pods while they are being removed.
stop_pid kubelet
stop_pid kube-proxy
stop_pid kube-router
# The GitOps loop (hack/flux.sh), if it was started.
for c in kustomize-controller source-controller git-http; do stop_pid "$c"; done
# Every pod process lives under the kubelet's "kubepods" cgroup: kill them all, whatever state
# containerd is in, then the container shims of this cluster's containerd.
for d in /sys/fs/cgroup/*/kubepods; do
  [ -d "$d" ] || continue
  find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
done
pkill -9 -f "containerd-shim.*-address $CONTAINERD_SOCK" 2>/dev/null || true
for c in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_pid "$c"; done
unmount_all /tmp/hostpath_pv
stop_pid volumes
for d in /sys/fs/cgroup/*/kubepods; do
  [ -d "$d" ] || continue
  find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
done

# Mounts: the kubelet's volumes, containerd's snapshots and sandboxes, the pods' network namespaces.
unmount_all "$STATE"
unmount_all "$IMAGE_STORE/root"
mounts=$(awk '{print $2}' /proc/mounts | grep -E "^(/run/netns/cni-|/var/run/netns/cni-)" | sort -r || true)
for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$ns" 2>/dev/null || true; done

ip link del "$BRIDGE" 2>/dev/null || true

# iptables: our guard, kube-proxy's and kube-router's KUBE-* and the CNI plugins' CNI-* chains, and
# jumps to them.
for ipt in iptables ip6tables; do
  for table in filter nat mangle; do
    rules=$($ipt-save -t "$table" 2>/dev/null) || continue
    jumps=$(echo "$rules" | grep -E '^-A .*(SECUREMODEL-GUARD|-j (KUBE-|CNI-))' | grep -vE '^-A (KUBE-|CNI-|SECUREMODEL-)' || true)
    while read -r rule; do
      [ -n "$rule" ] && { eval "$ipt -t $table ${rule/-A/-D}" 2>/dev/null || true; }
    done <<<"$jumps"
    chains=$(echo "$rules" | sed -n 's/^:\(KUBE-[^ ]*\|CNI-[^ ]*\|SECUREMODEL-[^ ]*\) .*/\1/p')
    for c in $chains; do $ipt -t "$table" -F "$c" 2>/dev/null || true; done
    for c in $chains; do $ipt -t "$table" -X "$c" 2>/dev/null || true; done
  done
done
# kube-router's ipsets, once no rule refers to them.
if command -v ipset >/dev/null; then
  for set in $(ipset list -n 2>/dev/null | grep -E '^(inet6:)?(KUBE-(SRC|DST)-|TMP-)[A-Z2-7]+$' || true); do
    ipset destroy "$set" 2>/dev/null || true
  done
fi

rm -rf "$STATE" /tmp/hostpath_pv "$REPO_ROOT/.cluster/kubeconfig" "$REPO_ROOT/.cluster/bin"
