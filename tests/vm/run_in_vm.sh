#!/bin/bash
# Runs a command as root in a Debian VM whose only cgroup hierarchy is cgroup v2, with the cpu,
# memory and pids controllers on: the layout of a host booted with cgroup v2 alone, which this
# project's hosts are not (hybrid: v1 controllers, an empty cgroup2). The guest runs Debian's
# kernel on this host's own root filesystem (9p, read-only, under a tmpfs overlay), so it runs
# the binaries built here, with the tools installed here; it sees none of the host's processes
# and the host sees none of its writes. The command's stdout and stderr come back on ours.
#
#   tests/vm/run_in_vm.sh [--memory MiB] [--timeout S] -- command [args...]
#   tests/vm/run_in_vm.sh --prepare      (only download and prepare the kernel: scripts/setup.sh)
#
# The command runs in the current directory. Exit status: the command's; 125 when the VM did
# not run it (its console output is then printed). Needs qemu-system-x86, busybox-static and
# kmod (scripts/setup.sh); the kernel is Debian's, downloaded once with apt-get and cached in
# /var/cache/gantry-vm. KVM is used when it works here and TCG (software emulation, several times
# slower) otherwise: on this project's VMs /dev/kvm exists but a guest hangs at boot under it.
set -euo pipefail

memory=4096
timeout_s=1200
prepare_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) prepare_only=1; shift ;;
    --memory) memory="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--memory MiB] [--timeout S] -- command [args...]" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || [ "$prepare_only" = 1 ] || { echo "usage: $0 [--memory MiB] [--timeout S] -- command [args...]" >&2; exit 2; }

here="$(cd "$(dirname "$0")" && pwd)"
cache="${GANTRY_VM_CACHE:-/var/cache/gantry-vm}"
for tool in qemu-system-x86_64 depmod; do
  command -v "$tool" >/dev/null || { echo "$0: $tool missing: run scripts/setup.sh" >&2; exit 125; }
done
[ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' ||
  { echo "$0: a static /bin/busybox is needed: run scripts/setup.sh" >&2; exit 125; }

# The kernel: Debian's current one, extracted from its package (not installed: no hooks run).
prepare_kernel() {
  local pkg kver tmp
  pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')"
  [ -n "$pkg" ] || { echo "$0: apt knows no linux-image-amd64" >&2; return 1; }
  kver="${pkg#linux-image-}"
  # net-modules-2: a cache made before the initrd carried the network modules is made again.
  if [ ! -f "$cache/$kver/initrd.gz" ] || [ ! -f "$cache/$kver/net-modules-2" ]; then
    echo "test VM: preparing kernel $kver in $cache (once)" >&2
    tmp="$(mktemp -d)"
    chmod 777 "$tmp"
    # Stale package lists name a kernel the mirror no longer has: update them and retry.
    (cd "$tmp" && { apt-get download -q "$pkg" >&2 ||
                    { apt-get update -qq >&2 && apt-get download -q "$pkg" >&2; }; } &&
       dpkg-deb -x ./*.deb root) || return 1
    depmod -b "$tmp/root" "$kver"
    local mods="$tmp/root/lib/modules/$kver" initrd="$tmp/initrd" f
    mkdir -p "$initrd"/{bin,proc,sys,dev,host,newroot,lib/modules/$kver}
    cp /bin/busybox "$initrd/bin/"
    cp "$here/initramfs_init.sh" "$initrd/init"
    chmod 755 "$initrd/init"
    # The root's modules, and those of the agent's worker networks (veth, bridge, netfilter:
    # the guest loads them on demand from the initrd's copy, which init puts under the root).
    for f in $(grep -E '^kernel/(fs/9p/9p|net/9p/9pnet_virtio|drivers/virtio/virtio_pci|fs/overlayfs/overlay|drivers/net/veth|net/bridge/bridge|net/bridge/br_netfilter|net/netfilter/[^/]+|net/ipv4/netfilter/[^/]+|net/ipv6/netfilter/[^/]+|crypto/crc32c_generic|arch/x86/crypto/crc32c-intel)\.ko' \
                 "$mods/modules.dep" | tr -d ':' | tr ' ' '\n' | sort -u); do
      mkdir -p "$initrd/lib/modules/$kver/$(dirname "$f")"
      cp "$mods/$f" "$initrd/lib/modules/$kver/$f"
    done
    depmod -b "$initrd" "$kver" 2>/dev/null
    mkdir -p "$cache/$kver.new"
    cp "$tmp/root/boot/vmlinuz-$kver" "$cache/$kver.new/vmlinuz"
    cp "$here/initramfs_init.sh" "$cache/$kver.new/init"
    touch "$cache/$kver.new/net-modules-2"
    (cd "$initrd" && find . | busybox cpio -o -H newc 2>/dev/null) | gzip -1 > "$cache/$kver.new/initrd.gz"
    rm -rf "$tmp" "$cache/$kver"
    mv "$cache/$kver.new" "$cache/$kver"
  fi
  echo "$cache/$kver"
}
mkdir -p "$cache"
# One preparation at a time (concurrent test runs share the cache).
locked_prepare() {
  flock "$cache/.lock" bash -c "set -euo pipefail; $(declare -f prepare_kernel);
    here='$here' cache='$cache'; prepare_kernel"
}
kdir="$(locked_prepare)" || { echo "$0: could not prepare the VM's kernel" >&2; exit 125; }
# The initramfs carries initramfs_init.sh: rebuild it when that script changes.
if ! cmp -s "$kdir/init" "$here/initramfs_init.sh"; then
  flock "$cache/.lock" rm -rf "$kdir"
  kdir="$(locked_prepare)" || { echo "$0: could not prepare the VM's kernel" >&2; exit 125; }
fi

[ "$prepare_only" = 1 ] && { echo "test VM: kernel ready in $kdir"; exit 0; }

out="$(mktemp -d /tmp/gantry-vm-out.XXXXXX)"
trap 'rm -rf "$out"' EXIT
echo "$PWD" > "$out/workdir"
{
  echo "cd $(printf %q "$PWD")"
  printf '%q ' "$@"
  echo
} > "$out/cmd.sh"

accel=(-accel tcg,thread=multi -cpu max)
if [ -w /dev/kvm ] && [ "${GANTRY_VM_KVM:-0}" = 1 ]; then accel=(-accel kvm -cpu host,-arch-capabilities); fi
set +e
timeout "$timeout_s" qemu-system-x86_64 "${accel[@]}" -m "$memory" -smp "$(nproc)" \
  -nographic -nodefaults -no-reboot -serial stdio -net none \
  -kernel "$kdir/vmlinuz" -initrd "$kdir/initrd.gz" \
  -append "console=ttyS0 quiet panic=-1 gantry_init=$here/guest_init.sh" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
  -virtfs local,path="$out",mount_tag=gantryout,security_model=passthrough,multidevs=remap \
  < /dev/null > "$out/console" 2>&1
qemu_rc=$?
set -e
[ -f "$out/log" ] && cat "$out/log"
if [ ! -f "$out/rc" ]; then
  echo "$0: the VM did not run the command (qemu exit $qemu_rc); its console:" >&2
  tail -n 40 "$out/console" >&2
  exit 125
fi
exit "$(cat "$out/rc")"
