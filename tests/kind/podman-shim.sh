#!/usr/bin/env bash
# `podman` as kind sees it (tests/kind puts a link to this script first in
# PATH): kind always mounts the host's /lib/modules into its nodes, which
# fails where the host has none; then an empty directory is mounted instead.
# Everything else goes to the real podman unchanged.
set -euo pipefail
self_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
args=()
for a in "$@"; do
    if [ "$a" = "/lib/modules:/lib/modules:ro" ] && [ ! -d /lib/modules ]; then
        mkdir -p "$self_dir/../empty-lib-modules"
        a="$self_dir/../empty-lib-modules:/lib/modules:ro"
    fi
    args+=("$a")
done
# drop this directory from PATH, then run the real podman
IFS=: read -r -a parts <<<"$PATH"
path=""
for p in "${parts[@]}"; do
    [ "$p" = "$self_dir" ] || path="${path:+$path:}$p"
done
PATH="$path" exec podman "${args[@]}"
