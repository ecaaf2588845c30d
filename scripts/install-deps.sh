#!/usr/bin/env bash
# Installs what bothnia's lab and tests need on a fresh Debian 12 machine,
# as root. Idempotent: a second run installs nothing.
set -euo pipefail
# mariadb-server and neutron-server: the real Neutron API the OpenStack tests
# talk to (their packaged services are not used; the tests start their own);
# rabbitmq-server, neutron-linuxbridge-agent, neutron-dhcp-agent (dnsmasq),
# socat, sudo and ebtables: the real agents that run the lab's foreign site
# (internal/devcloud); python3-pip and python3-setuptools install bothnia's
# ML2 driver into that Neutron as an operator would (pip, offline);
# graphviz renders show topology -o svg; conntrackd (conntrack-tools) syncs
# router replicas' connection state, conntrack lists it; qemu-system-x86,
# debootstrap, busybox-static (the guests' initramfs shell; it stands in
# for busybox, udhcpc's dependency), xz-utils and e2fsprogs build and boot
# the Debian guests of the 802.1Q tests (scripts/guest-image.sh).
pkgs=(iproute2 nftables iptables ipset udhcpc iputils-ping kmod ca-certificates mariadb-server neutron-server
  rabbitmq-server neutron-linuxbridge-agent neutron-dhcp-agent dnsmasq-base socat sudo ebtables graphviz
  python3-pip python3-setuptools conntrackd conntrack qemu-system-x86 debootstrap busybox-static xz-utils e2fsprogs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/local/go/bin:$(go env GOPATH 2>/dev/null || echo /root/go)/bin"
command -v go >/dev/null || { echo "install-deps: Go is not installed (expected at /usr/local/go)" >&2; exit 1; }
command -v staticcheck >/dev/null || GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.7.0
