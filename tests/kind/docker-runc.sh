#!/usr/bin/env bash
# runc as the tier's private Docker engine (docker-engine.sh) runs it.
# Docker 20.10 (Debian bookworm's) gives a --privileged container every
# capability the kernel knows, also those missing from the engine's own
# bounding set — on the VM this project is built on, CAP_SYS_RESOURCE — and
# runc then fails with "unable to apply caps: operation not permitted"
# (moby/moby#42906; later Docker limits them itself, as podman does). This
# drops those capabilities from the container's config.json (create, run) or
# the exec's process file, then runs the real runc with the same arguments.
set -euo pipefail
# NODEMEDIC_RUNC_CAP_BOUNDING (hex) stands in for this process's bounding
# set: tests/tests/kind_scripts.rs uses it to act as a host lacking some.
bounding="${NODEMEDIC_RUNC_CAP_BOUNDING:-$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)}"
last="$(cat /proc/sys/kernel/cap_last_cap)"
missing=$((((1 << (last + 1)) - 1) & ~0x$bounding))
if [ "$missing" != 0 ]; then
    file="" prev=""
    for a in "$@"; do
        case "$prev" in
            --bundle | -b) file="$a/config.json" ;;
            --process | -p) file="$a" ;;
        esac
        case "$a" in
            --bundle=*) file="${a#--bundle=}/config.json" ;;
            --process=*) file="${a#--process=}" ;;
        esac
        prev="$a"
    done
    if [ -n "$file" ] && [ -f "$file" ]; then
        drop="$(capsh --decode="$(printf '%x' "$missing")" | cut -d= -f2 | tr '[:lower:],' '[:upper:]\n' | jq -R . | jq -cs .)"
        jq --argjson drop "$drop" '
            def strip: if type == "object"
                then with_entries(.value |= (if type == "array" then map(select(. as $c | $drop | index($c) | not)) else . end))
                else . end;
            if has("process") then .process.capabilities |= strip else .capabilities |= strip end
        ' "$file" >"$file.nodemedic" && mv "$file.nodemedic" "$file"
    fi
fi
exec runc "$@"
