#!/bin/sh
# containerscan-entrypoint: run `containerscan "$@"`, first turning a policy handed over in
# TRACING_POLICY_DOCUMENT (ECS injects SSM parameters as environment values) into a file
# only this user can read, under $TMPDIR (the one writable place with a read-only root).
# The variable is removed before exec, so a wrapped application never sees it.
#
# `containerscan-entrypoint install-launcher [DIR]` (the init container of the wrap
# deployment) copies the self-contained launcher into DIR (default /containerscan, a task
# volume the application container mounts) and exits.
set -eu
if [ "${1:-}" = install-launcher ]; then
    dest="${2:-/containerscan}"
    src="${CONTAINERSCAN_LAUNCHER_DIR:-/opt/containerscan-launcher}"
    if [ ! -x "$src/bin/containerscan-run" ]; then
        echo "containerscan-entrypoint: no launcher in $src (an image built from docker/Dockerfile.sidecar has one)" >&2
        exit 1
    fi
    cp -R "$src/." "$dest/"
    echo "containerscan launcher installed in $dest: run $dest/bin/containerscan-run -- <command>"
    exit 0
fi
if [ -n "${TRACING_POLICY_DOCUMENT:-}" ]; then
    dir="${TMPDIR:-/tmp}/containerscan-policy"
    umask 077
    mkdir -p "$dir"
    printf '%s\n' "$TRACING_POLICY_DOCUMENT" > "$dir/policy.yaml"
    TRACING_POLICY_PATH="$dir/policy.yaml"
    export TRACING_POLICY_PATH
fi
unset TRACING_POLICY_DOCUMENT
exec containerscan "$@"
