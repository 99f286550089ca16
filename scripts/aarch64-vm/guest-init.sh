#!/bin/busybox sh
# /init of the arm64 guest (build.py packs it): mount the kernel's file systems, run the
# injection tests (guest.py prints the result line run.py parses), power off.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t tmpfs tmpfs /tmp
export PATH=/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1
echo "CONTAINERSCAN-AARCH64-BOOTED uptime=$(/bin/busybox cut -d' ' -f1 /proc/uptime)"
cd /work/containerscan && /usr/bin/python3.11 scripts/aarch64-vm/guest.py
echo "CONTAINERSCAN-AARCH64-END status=$?"
/bin/busybox poweroff -f
