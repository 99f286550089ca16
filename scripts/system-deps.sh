#!/bin/sh
# Debian packages the tests, the benchmarks and the local quick start use. Installed only when
# missing, and only when we are root on a Debian-like system; otherwise say what is missing.
set -u
missing=""
for pair in strace:strace docker-registry:docker-registry busybox:busybox-static; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
else
    echo "warning: missing Debian packages:$missing (tests that need them are skipped)" >&2
fi
