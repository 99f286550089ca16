#!/bin/sh
# containerscan-entrypoint: run `containerscan "$@"`, first turning a policy handed over in
# TRACING_POLICY_DOCUMENT (ECS injects SSM parameters as environment values) into a file
# only this user can read, under $TMPDIR (the one writable place with a read-only root).
# The variable is removed before exec, so a wrapped application never sees it.
set -eu
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
