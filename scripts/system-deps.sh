#!/bin/sh
# Debian packages the quick start and the tests use: `sh scripts/system-deps.sh demo` (the
# local quick start: docker-registry) or `sh scripts/system-deps.sh test` (also strace;
# chromium-headless-shell, which renders the run page status.html in its test; buildah and
# debootstrap, which build and run the images on a local Debian base in the slow suite;
# busybox-static, the only program in the chroot the sidecar's launcher test runs in; gcc,
# libc6-dev and binutils, which build that launcher's static entry point; qemu-system-arm
# and cpio, which build and boot the arm64 guest of the seccomp-injection test, without
# recommended packages: the guest needs no display or firmware). Installed only when
# missing, and only when we are root on a Debian-like system; otherwise say what is
# missing. (python3-venv is scripts/venv.sh's business: it is needed before anything else.)
#
# `sh scripts/system-deps.sh build PYTHON`: what `pip install` needs to build the tracer's
# compiled stop loop (setup.py): gcc, libc6-dev, and PYTHON's headers (python3-dev).
set -u
lean=""
case "${1:-test}" in
    build)
        pairs="gcc:gcc,libc6-dev"
        python=${2:-python3}
        "$python" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null ||
            pairs="$pairs python3-dev-headers:python3-dev" ;;
    demo) pairs="docker-registry:docker-registry" ;;
    test) pairs="strace:strace docker-registry:docker-registry chromium-headless-shell:chromium-headless-shell buildah:buildah debootstrap:debootstrap busybox:busybox-static gcc:gcc,libc6-dev,binutils"
          lean="qemu-system-aarch64:qemu-system-arm cpio:cpio" ;;
    *) echo "usage: sh scripts/system-deps.sh build PYTHON|demo|test" >&2; exit 2 ;;
esac
missing_of() {
    out=""
    for pair in $1; do
        cmd=${pair%%:*}; pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || out="$out $(echo "$pkg" | tr , ' ')"
    done
    echo "$out"
}
missing=$(missing_of "$pairs")
missing_lean=$(missing_of "$lean")
[ -z "$missing$missing_lean" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing $missing_lean" >&2
    apt-get update -qq >/dev/null || exit 1
    if [ -n "$missing" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
    if [ -n "$missing_lean" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing_lean >/dev/null
    fi
else
    echo "warning: missing Debian packages:$missing $missing_lean (tests that need them are skipped)" >&2
fi
