#!/bin/busybox sh
# /init of the test VM's initramfs (tests/vm/run_in_vm.sh builds it): mounts the host's root,
# shared read-only over 9p, under a tmpfs overlay (the guest may write anywhere, the host sees
# none of it), and hands over to the guest script named by gantry_init= on the kernel command line.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_pci 9pnet_virtio 9p overlay; do
  modprobe "$m" || echo "initramfs: modprobe $m failed"
done
guest_init=
for arg in $(cat /proc/cmdline); do
  case "$arg" in gantry_init=*) guest_init="${arg#gantry_init=}" ;; esac
done
fail() { echo "initramfs: $*"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host ||
  fail "cannot mount the host's root"
mkdir -p /rw && mount -t tmpfs -o size=75% tmpfs /rw && mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot ||
  fail "cannot mount the overlay root"
[ -n "$guest_init" ] && [ -f "/newroot$guest_init" ] || fail "no guest script: '$guest_init'"
# The guest kernel's modules, which the host's root lacks, into the overlay: the kernel loads
# those it needs later (veth, bridge, netfilter) with the root's modprobe.
kver="$(uname -r)"
mkdir -p "/newroot/lib/modules/$kver" && cp -a "/lib/modules/$kver/." "/newroot/lib/modules/$kver/"
umount /proc /sys /dev
exec switch_root /newroot /bin/bash "$guest_init"
