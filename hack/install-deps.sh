#!/usr/bin/env bash
# Install the Debian packages the local cluster and the image builds need, once per machine.
set -euo pipefail
packages=(containerd runc buildah bindfs containernetworking-plugins debootstrap conntrack iptables iproute2 socat curl openssl gcc libc6-dev lua5.4 ipset git)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
