#!/bin/sh
# Create the virtual environment the Makefile installs into: scripts/venv.sh PYTHON DIR.
#
# Debian's own python3 is "externally managed" (PEP 668: pip refuses to install into it), and
# its venv module needs the python3-venv package (without it `python3 -m venv` fails because
# ensurepip is missing). So: reuse DIR when it is a working virtual environment; else create
# it, and when that fails, install python3-venv (as root, with apt-get) and try once more.
# APT_GET names the apt-get to run (the tests give a stand-in).
set -eu
python=${1:?usage: scripts/venv.sh PYTHON DIR}
venv=${2:?usage: scripts/venv.sh PYTHON DIR}
apt_get=${APT_GET:-apt-get}

if [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
    exit 0
fi
command -v "$python" >/dev/null 2>&1 || { echo "error: $python not found (Python 3.11 or newer is needed)" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "error: $python is older than Python 3.11; give PYTHON3=python3.11 or newer" >&2; exit 1; }

rm -rf "$venv"  # a half-made one from an interrupted run
if "$python" -m venv "$venv" >/dev/null 2>&1; then
    exit 0
fi
rm -rf "$venv"
if [ "$(id -u)" = 0 ] && command -v "$apt_get" >/dev/null 2>&1; then
    echo "installing Debian package: python3-venv (for $venv)" >&2
    if "$apt_get" update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive "$apt_get" install -y -qq python3-venv >/dev/null &&
        "$python" -m venv "$venv"; then
        exit 0
    fi
    rm -rf "$venv"
fi
echo "error: cannot create the virtual environment $venv with $python" >&2
echo "  hint: install Debian's python3-venv (apt-get install python3-venv) and run make again" >&2
exit 1
