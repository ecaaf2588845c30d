#!/usr/bin/env bash
# Builds the Debian guest that bothnia's guest tests boot under qemu
# (package internal/guest): Debian's own kernel, whose modules have what
# this machine's kernel lacks (802.1Q, bridge VLAN filtering), a busybox
# initramfs that mounts the root file system, and a bookworm root file
# system with the tools the tests run inside. Guests share the image
# read-only (qemu's snapshot=on) and get bothnia's binaries over 9p.
#
# Usage: scripts/guest-image.sh [CACHE_DIR]   (default /var/cache/bothnia/guest)
# Prints the directory holding vmlinux, initrd.img and rootfs.img. The
# build runs once per version of this script and kernel; later calls
# print the cached directory at once. Needs root, debootstrap, kmod,
# xz-utils, e2fsprogs and busybox-static (scripts/install-deps.sh).
set -euo pipefail
cache=${1:-/var/cache/bothnia/guest}
# What the tests run inside a guest, beyond debootstrap's minimal base.
packages=iproute2,nftables,iptables,kmod,busybox,udhcpc,procps,iputils-ping,tcpdump

# The kernel: the newest linux-image-6.1 Debian's metapackage names.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $kpkg ]] || { echo "guest-image: apt knows no linux-image-amd64; run apt-get update" >&2; exit 1; }
key=$(cat "$0" <(echo "$kpkg") | sha256sum | cut -c1-12)
out=$cache/$key
if [[ -f $out/done ]]; then
  echo "$out"
  exit 0
fi

# The Debian archive this machine installs from: the guest is built from
# the same place (no mirror is named here).
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[[ -n $mirror ]] || mirror=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[[ -n $mirror ]] || { echo "guest-image: no Debian archive in /etc/apt (sources.list.d/debian.sources or sources.list)" >&2; exit 1; }

tmp=$(mktemp -d /var/tmp/bothnia-guest.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$cache"
log=$tmp/build.log
fail() { echo "guest-image: $1 (log follows)" >&2; tail -n 30 "$log" >&2; exit 1; }

(cd "$tmp" && apt-get download "$kpkg" >>"$log" 2>&1) || fail "apt-get download $kpkg failed"
dpkg-deb -x "$tmp"/"$kpkg"_*.deb "$tmp/k"
kver=${kpkg#linux-image-}
# qemu boots the uncompressed kernel by its PVH entry (with qboot, the
# fastest firmware); the package ships it xz-compressed inside vmlinuz.
vmlinuz=$tmp/k/boot/vmlinuz-$kver
off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1)
[[ -n $off ]] || fail "no xz payload in $vmlinuz"
tail -c +$((off + 1)) "$vmlinuz" | xz -dcq --single-stream >"$tmp/vmlinux" || true
file_magic=$(head -c 4 "$tmp/vmlinux" | od -An -c | tr -d ' ')
[[ $file_magic == 177ELF ]] || fail "the kernel unpacked from $vmlinuz is not an ELF file"

# Modules the guests use, not all 400 MB of them.
mods=$tmp/k/lib/modules/$kver/kernel
prune() { # DEST PATH...: copy those modules (globs under kernel/) into DEST
  local dest=$1 d=$1/lib/modules/$kver p f
  shift
  mkdir -p "$d/kernel"
  for p in "$@"; do
    for f in $mods/$p; do
      [[ -e $f ]] || continue
      mkdir -p "$d/kernel/$(dirname "${f#"$mods"/}")"
      cp -a "$f" "$d/kernel/$(dirname "${f#"$mods"/}")/"
    done
  done
  cp "$tmp/k/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$d/" 2>/dev/null || true
  depmod -b "$dest" "$kver"
}
# The root: networking (802.1Q, bridge, netfilter, veth, vxlan, macvlan,
# virtio-net), 9p, the serial port, and what they need.
rootmods=(net 'drivers/net/*.ko' drivers/net/vxlan drivers/virtio drivers/block/virtio_blk.ko
  drivers/char/virtio_console.ko fs/9p fs/netfs fs/fscache fs/ext4 fs/jbd2 fs/mbcache.ko lib crypto arch)
# The initramfs: only what mounting the root takes.
initmods=(drivers/virtio drivers/block/virtio_blk.ko fs/ext4 fs/jbd2 fs/mbcache.ko lib/crc16.ko crypto/crc32c_generic.ko)

echo "guest-image: debootstrap bookworm ($packages)" >&2
debootstrap --variant=minbase --include="$packages" bookworm "$tmp/root" "$mirror" >>"$log" 2>&1 ||
  fail "debootstrap from $mirror failed"
prune "$tmp/root" "${rootmods[@]}"
rm -rf "$tmp/root"/var/cache/apt/archives/*.deb "$tmp/root"/var/lib/apt/lists/*
echo bothnia-guest >"$tmp/root/etc/hostname"
mkdir -p "$tmp/root/host"
# The guest's init: the kernel's command line names the guest; the host's
# share (bothnia's binaries and the guest agent) is mounted on /host and
# the agent serves the test over the virtio serial port "ctl".
cat >"$tmp/root/sbin/guest-init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mkdir -p /run/netns /var/run
# The initramfs pointed the kernel at its own modprobe; this one's is kmod.
echo /sbin/modprobe >/proc/sys/kernel/modprobe
for m in virtio_net virtio_console 9pnet_virtio 9p 8021q bridge br_netfilter; do modprobe "$m"; done
name=$(sed -n 's/.*bothnia\.name=\([^ ]*\).*/\1/p' /proc/cmdline)
hostname "${name:-guest}"
ip link set lo up
# The NIC on the fibre is the seed's em1; more NICs keep their names.
mac=$(sed -n 's/.*bothnia\.em1=\([^ ]*\).*/\1/p' /proc/cmdline)
for d in /sys/class/net/*; do
  [ "$(cat "$d/address")" = "$mac" ] && ip link set "$(basename "$d")" name em1 && ip link set em1 up
done
mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose host /host
port=$(grep -l '^ctl$' /sys/class/virtio-ports/*/name | head -1)
dev=/dev/$(basename "$(dirname "$port")")
echo "guest-init: ${name} up, agent on ${dev}"
exec /host/guestd -port "$dev"
EOF
chmod +x "$tmp/root/sbin/guest-init"

# The initramfs: busybox, and what it takes to mount the root (virtio
# block, ext4) before handing over to guest-init.
ir=$tmp/initrd
mkdir -p "$ir"/{bin,dev,proc,sys,newroot}
cp /bin/busybox "$ir/bin/busybox"
for a in sh mount switch_root modprobe sleep cat; do ln -s busybox "$ir/bin/$a"; done
prune "$ir" "${initmods[@]}"
cat >"$ir/init" <<'EOF'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# ext4 asks the kernel for crc32c, whose helper is modprobe.
echo /bin/modprobe >/proc/sys/kernel/modprobe
for m in virtio_pci virtio_blk crc32c_generic ext4; do modprobe "$m"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
# A guest that cannot mount its root powers off: the test sees qemu exit.
mount /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; echo o >/proc/sysrq-trigger; sleep 10; }
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/guest-init
EOF
chmod +x "$ir/init"
ldd /bin/busybox >/dev/null 2>&1 && fail "/bin/busybox is not static: install busybox-static"
(cd "$ir" && find . | busybox cpio -o -H newc 2>>"$log" | gzip -1 >"$tmp/initrd.img")

size=$(($(du -sm "$tmp/root" | cut -f1) + 200))
mkfs.ext4 -q -L bothnia-guest -d "$tmp/root" "$tmp/rootfs.img" "${size}M" >>"$log" 2>&1 || fail "mkfs.ext4 failed"

mkdir -p "$out"
mv "$tmp/vmlinux" "$tmp/initrd.img" "$tmp/rootfs.img" "$out/"
echo "$kver" >"$out/kernel-version"
touch "$out/done"
# Older builds (another version of this script or kernel) go.
find "$cache" -mindepth 1 -maxdepth 1 -not -name "$key" -exec rm -rf {} +
echo "$out"
