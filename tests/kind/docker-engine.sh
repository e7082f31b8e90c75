#!/usr/bin/env bash
# A private Docker engine for running the kind tier through kind's docker
# provider on a machine that has no Docker engine of its own (like the one
# this project is built on): Debian's dockerd with its own socket, data root
# and address pool, the tier's locally built node image loaded into it, and
# the host's firewall and sysctls put back when it stops.
#
#   tests/kind/docker-engine.sh run CMD...   # up, CMD with the env below, down
#   tests/kind/docker-engine.sh up           # start; prints the env to eval
#   tests/kind/docker-engine.sh down         # stop; restore the host
#
# The env: DOCKER_HOST (the private socket), NODEMEDIC_KIND_PROVIDER=docker,
# KIND_NODE_IMAGE (this tier's node image, which brings its static bridge
# CNI instead of kindnetd; see kind_image_is_local in lib.sh).
#
# Nothing of it is used by `make test`: with the engine down, the tier finds
# no Docker and runs under podman. Where a Docker engine already answers
# (`docker info`), the tier uses it and kindest/node directly, without this.
# Addresses: no docker0 (--bridge=none; Docker's default 172.17/16 is never
# used), new networks from 198.19.64.0/18 (the tier names its own subnet).
set -euo pipefail
# shellcheck source=tests/kind/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

run_dir=/run/nodemedic-docker
socket="$run_dir/docker.sock"
data_root="$kind_cache/docker"
snapshot="$kind_cache/docker-host-baseline"
pool="198.19.64.0/18"

log() { echo "docker-engine: $*" >&2; }
die() {
    log "$*"
    exit 1
}
dk() { DOCKER_HOST="unix://$socket" docker "$@"; }
engine_pid() { cat "$run_dir/dockerd.pid" 2>/dev/null || true; }
answers() { dk info >/dev/null 2>&1; }

do_up() {
    [ "$(id -u)" = 0 ] || die "run as root: dockerd changes the host's firewall"
    if ! command -v dockerd >/dev/null 2>&1; then
        log "installing Debian's docker.io (its service is not started)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io >"$kind_cache/docker-apt.log" 2>&1 ||
            die "apt-get install docker.io failed: $kind_cache/docker-apt.log"
    fi
    if ! answers; then
        mkdir -p "$run_dir" "$data_root" "$snapshot"
        # what dockerd changes: the firewall (its chains, FORWARD's policy)
        # and IP forwarding
        # (iptables-save prints nothing while no table exists yet)
        iptables-save >"$snapshot/iptables"
        : >"$snapshot/taken"
        sysctl -n net.ipv4.ip_forward >"$snapshot/ip_forward"
        nft list tables >"$snapshot/nft-tables" 2>/dev/null || true
        log "starting dockerd (socket $socket, data $data_root)"
        # runc through docker-runc.sh: capabilities this host lacks are
        # dropped from privileged containers (see there)
        setsid dockerd --bridge=none --default-address-pool "base=$pool,size=24" \
            --add-runtime "nodemedic-runc=$kind_dir/docker-runc.sh" --default-runtime nodemedic-runc \
            --data-root "$data_root" --exec-root "$run_dir/exec" --pidfile "$run_dir/dockerd.pid" \
            -H "unix://$socket" --log-level warn >"$kind_cache/dockerd.log" 2>&1 </dev/null &
        local deadline=$((SECONDS + 60))
        until answers; do
            [ "$SECONDS" -lt "$deadline" ] || die "dockerd does not answer after 60 s: $kind_cache/dockerd.log"
            sleep 1
        done
    fi
    local image
    image="$(cat "$kind_cache/node-image.ref" 2>/dev/null)" || die "no local node image: run tests/kind/provision.sh first"
    if ! dk image inspect "$image" >/dev/null 2>&1; then
        log "loading the node image $image from the tier's podman store"
        (
            kind_setup_env podman
            podman save --format docker-archive "$image"
        ) | dk load >/dev/null || die "could not load $image into the engine"
    fi
    log "up: $(dk version --format 'Docker {{.Server.Version}}')"
    echo "export DOCKER_HOST=unix://$socket NODEMEDIC_KIND_PROVIDER=docker KIND_NODE_IMAGE=$image"
}

# The snapshot's lines of one iptables table (iptables-save format).
saved() { awk -v t="*$1" '$0 == t { on = 1; next } on && $0 == "COMMIT" { on = 0 } on' "$snapshot/iptables"; }

# The firewall as it was before dockerd: its chains go, FORWARD's policy
# and IP forwarding come back.
restore_host() {
    [ -f "$snapshot/taken" ] || return 0
    local table chain rule policy
    local -a added
    for table in filter nat; do
        # what dockerd added: rules jumping to its chains, and the chains
        # themselves (what the snapshot already had stays)
        while read -r rule; do
            saved "$table" | grep -qxF -- "$rule" && continue
            eval "iptables -w 5 -t $table -D ${rule#-A }" 2>/dev/null || true
        done < <(iptables -w 5 -t "$table" -S | grep -E '^-A (INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) .*-j DOCKER' || true)
        added=()
        for chain in $(iptables -w 5 -t "$table" -S | sed -n 's/^-N \(DOCKER[A-Z0-9-]*\)$/\1/p'); do
            saved "$table" | grep -q "^:$chain " || added+=("$chain")
        done
        for chain in "${added[@]}"; do iptables -w 5 -t "$table" -F "$chain" 2>/dev/null || true; done
        for chain in "${added[@]}"; do
            iptables -w 5 -t "$table" -X "$chain" 2>/dev/null || log "WARNING: could not remove chain $table/$chain"
        done
    done
    policy="$(sed -n 's/^:FORWARD \([A-Z]*\) .*/\1/p' "$snapshot/iptables" | head -n 1)"
    iptables -w 5 -P FORWARD "${policy:-ACCEPT}"
    [ -s "$snapshot/ip_forward" ] && sysctl -qw "net.ipv4.ip_forward=$(cat "$snapshot/ip_forward")"
    # nftables tables that iptables-nft made for dockerd and that hold no
    # rule now
    local t
    while read -r t; do
        [ -n "$t" ] || continue
        grep -qxF -- "$t" "$snapshot/nft-tables" 2>/dev/null && continue
        # shellcheck disable=SC2086 # "table FAMILY NAME"
        if ! nft list $t 2>/dev/null | grep -vE '^[[:space:]]*(table |chain |type |\}|$)' | grep -q .; then
            nft delete $t 2>/dev/null && log "down: removed the empty nftables $t"
        fi
    done < <(nft list tables 2>/dev/null || true)
    rm -rf "$snapshot"
    log "down: firewall and ip_forward as before dockerd"
}

do_down() {
    local pid
    pid="$(engine_pid)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        local deadline=$((SECONDS + 30))
        while kill -0 "$pid" 2>/dev/null; do
            [ "$SECONDS" -lt "$deadline" ] || {
                log "dockerd did not stop in 30 s; killing it"
                kill -9 "$pid" 2>/dev/null || true
                break
            }
            sleep 0.5
        done
        log "down: dockerd stopped"
    fi
    pkill -f "containerd --config $run_dir/" 2>/dev/null || true
    restore_host
    rm -rf "$run_dir"
}

case "${1:-}" in
    up) do_up ;;
    down) do_down ;;
    run)
        shift
        [ "$#" -gt 0 ] || die "usage: $0 run CMD..."
        trap do_down EXIT
        eval "$(do_up)"
        "$@"
        ;;
    *) die "usage: $0 up|down|run CMD..." ;;
esac
