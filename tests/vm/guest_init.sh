#!/bin/bash
# PID 1 of the test VM (tests/vm/run_in_vm.sh), on the host's root under a tmpfs overlay.
# Gives the guest what a host has (proc, sys, dev, tmp, loopback) and cgroup v2 alone, with
# the cpu, memory and pids controllers on (what a host booted with cgroup v2 only has, as
# systemd sets it up), then runs <out>/cmd.sh and leaves its exit status in <out>/rc. The out
# folder is the host's, shared read-write as "gantryout".
set -u
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /gantry-out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 gantryout /gantry-out
# /run and /tmp fresh, as tmpfs: the host's runtime state is not the guest's, and an overlay's
# upper directory (a container's writable layer) cannot be on the overlay root. The directory
# the command runs in stays visible when it is under /tmp (CI's clean clone is).
mount -t tmpfs tmpfs /run
mkdir -p /run/host-tmp
mount --bind /tmp /run/host-tmp
mount -t tmpfs tmpfs /tmp
chmod 1777 /tmp
workdir="$(cat /gantry-out/workdir)"
case "$workdir" in
  /tmp/*)
    mkdir -p "$workdir"
    mount --bind "/run/host-tmp/${workdir#/tmp/}" "$workdir"
    ;;
esac
ip link set lo up
hostname gantry-vm
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "guest: $(uname -r), cgroup v2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
bash /gantry-out/cmd.sh > /gantry-out/log 2>&1
echo $? > /gantry-out/rc
sync
poweroff -f
