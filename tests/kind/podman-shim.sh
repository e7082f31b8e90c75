#!/usr/bin/env bash
# `podman` as kind sees it (tests/kind puts a link to this script first in
# PATH; one link per checkout, see kind_shim_dir in lib.sh):
#  - kind always mounts the host's /lib/modules into its nodes, which fails
#    where the host has none; then an empty directory is mounted instead
#    ($NODEMEDIC_KIND_EMPTY_MODULES, made by lib.sh);
#  - with NODEMEDIC_KIND_NODE_HOSTS set (a file of "IP NAME" lines, written
#    by cluster.sh for clusters with workers), `podman run --name NAME ...`
#    of a node listed there gets `--ip IP` and an `--add-host` entry for
#    every listed node: podman's CNI backend has no DNS between containers,
#    and `kubeadm join` on a worker finds the control plane by name.
# Everything else goes to the real podman unchanged.
set -euo pipefail
self_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
empty_modules="${NODEMEDIC_KIND_EMPTY_MODULES:-$self_dir/../empty-lib-modules}"
args=()
for a in "$@"; do
    if [ "$a" = "/lib/modules:/lib/modules:ro" ] && [ ! -d /lib/modules ]; then
        mkdir -p "$empty_modules"
        a="$empty_modules:/lib/modules:ro"
    fi
    args+=("$a")
done
hosts="${NODEMEDIC_KIND_NODE_HOSTS:-}"
if [ -n "$hosts" ] && [ "${args[0]:-}" = run ] && [ "${args[1]:-}" = --name ] && [ -n "${args[2]:-}" ]; then
    [ -s "$hosts" ] || {
        echo "podman-shim: NODEMEDIC_KIND_NODE_HOSTS=$hosts is missing or empty" >&2
        exit 1
    }
    ip=""
    extra=()
    while read -r h_ip h_name; do
        [ -n "${h_name:-}" ] || continue
        extra+=(--add-host "$h_name:$h_ip")
        [ "$h_name" = "${args[2]}" ] && ip="$h_ip"
    done <"$hosts"
    if [ -n "$ip" ]; then
        args=(run --ip "$ip" "${extra[@]}" "${args[@]:1}")
    fi
fi
# drop this directory from PATH, then run the real podman
IFS=: read -r -a parts <<<"$PATH"
path=""
for p in "${parts[@]}"; do
    [ "$p" = "$self_dir" ] || path="${path:+$path:}$p"
done
PATH="$path" exec podman "${args[@]}"
