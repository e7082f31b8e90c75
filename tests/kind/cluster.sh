#!/usr/bin/env bash
# Lifecycle of the kind cluster of the test tier.
#
#   tests/kind/cluster.sh up          # (re)create the cluster; waits for the node
#                                     # Ready and CoreDNS running; prints the kubeconfig path
#   tests/kind/cluster.sh down        # delete everything `up` created, restore host state
#   tests/kind/cluster.sh status      # what exists now
#   tests/kind/cluster.sh kubeconfig  # print the kubeconfig path
#   tests/kind/cluster.sh env         # export lines: KUBECONFIG, PATH (kind, kubectl,
#                                     # helm), podman/kind settings -- for eval
#   tests/kind/cluster.sh load FILE.tar...  # load OCI/docker image archives into the node(s)
#   tests/kind/cluster.sh check-host  # after `down`: exit 1 unless the host is back to
#                                     # its state before `up` (no containers, volumes,
#                                     # networks, chains; sysctls as recorded)
#
# Provider: Docker when `docker info` works (kind's docker provider, public
# kindest/node image, KIND_NODE_IMAGE overrides), else podman with a private
# config/store and the node image built by tests/kind/provision.sh (run it
# first; `up` runs it when the image is missing).
#
# Addresses: node network, pod and service subnets all come from
# 198.18.0.0/15 (see lib.sh); the API server is published on 127.0.0.1.
#
# Host state: `up` records sysctls, iptables/ip6tables chains and nftables
# tables first (in the cluster's state dir); `down` deletes the cluster, its
# containers, volumes and network, the firewall chains/rules/tables that
# appeared, and writes back every recorded sysctl that changed (the
# privileged kubelet sets kernel.panic, kernel.panic_on_oops,
# vm.overcommit_memory host-wide; the bridge sets net.ipv4.ip_forward).
# `down` works after a half-failed `up`; `up` first cleans what a killed run
# left. Callers should `trap 'tests/kind/cluster.sh down' EXIT`.
#
# Environment: KIND_CLUSTER_NAME (default nodemedic-e2e), KIND_NODE_IMAGE,
# NODEMEDIC_KIND_PROVIDER, NODEMEDIC_KIND_CACHE, NODEMEDIC_KIND_KEEP_ON_FAILURE=1
# (leave a failed `up` for debugging; `down` still cleans it later).
set -euo pipefail

# shellcheck source=tests/kind/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd="${1:-}"
[ "$#" -gt 0 ] && shift
provider="$(kind_provider)"
kind_setup_env "$provider"
state="$(kind_state_dir)"
kubeconfig="$state/kubeconfig"
engine="$provider" # the container CLI: podman (through the shim) or docker

log() { echo "cluster: $*" >&2; }
t0=$SECONDS
elapsed() { echo "$((SECONDS - t0))s"; }

have_kind() { command -v kind >/dev/null 2>&1; }
cluster_exists() { have_kind && kind get clusters 2>/dev/null | grep -qxF "$KIND_CLUSTER_NAME"; }
network_exists() { "$engine" network inspect "$kind_network" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------
# host state: record and restore
# ---------------------------------------------------------------------------
# Sysctls always recorded and restored (the ones a run is known to change,
# and a few neighbours), plus any other global key that changed.
tracked_sysctls=(
    kernel.panic kernel.panic_on_oops vm.overcommit_memory
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes
    net.ipv4.ip_forward net.ipv4.conf.all.forwarding net.ipv4.conf.default.forwarding
    net.ipv6.conf.all.forwarding net.ipv6.conf.default.forwarding
    net.ipv4.conf.all.route_localnet net.ipv4.conf.default.route_localnet
    net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.bridge.bridge-nf-call-arptables
    net.netfilter.nf_conntrack_max fs.inotify.max_user_watches fs.inotify.max_user_instances
    vm.max_map_count fs.file-max kernel.pid_max
)
# Global keys compared in full (per-interface keys of interfaces that come and
# go, counters and random values are not state to restore).
sysctl_scope='^(kernel\.|vm\.|fs\.|net\.core\.|net\.ipv4\.(ip_forward|conf\.(all|default|lo|eth[0-9]+)\.)|net\.ipv6\.conf\.(all|default|lo|eth[0-9]+)\.|net\.bridge\.|net\.netfilter\.nf_conntrack_max)'
sysctl_volatile='^(kernel\.(random\.|ns_last_pid|pty\.nr|tainted|sched_domain|perf_event_max|numa_balancing)|fs\.(dentry-state|file-nr|inode-|quota\.|aio-nr|binfmt_misc\.)|vm\.(stat|drop_caches|compact_memory))'

sysctl_path() { echo "/proc/sys/${1//.//}"; }

snapshot_sysctls() { # FILE: key<TAB>value, global keys in scope
    local out="$1"
    # keys listed more than once (kernel.core_modes) are read-only listings
    sysctl -a 2>/dev/null | sed -n 's/^\([^ ]*\) = \(.*\)$/\1\t\2/p' |
        grep -E "$sysctl_scope" | grep -vE "$sysctl_volatile" |
        awk -F'\t' '{n[$1]++; v[$1]=$0} END {for (k in n) if (n[k] == 1) print v[k]}' | LC_ALL=C sort >"$out" || true
    local k v
    for k in "${tracked_sysctls[@]}"; do
        if ! grep -q "^$k	" "$out" && [ -r "$(sysctl_path "$k")" ]; then
            v="$(cat "$(sysctl_path "$k")")"
            printf '%s\t%s\n' "$k" "$v" >>"$out"
        fi
    done
}

restore_sysctls() { # BASELINE -> prints what it restored
    local base="$1" now pass k v cur p restored=0
    [ -s "$base" ] || return 0
    for pass in 1 2; do
        now="$(mktemp)"
        snapshot_sysctls "$now"
        while IFS=$'\t' read -r k v; do
            cur="$(grep -m1 "^$k	" "$now" | cut -f2- || true)"
            [ "$cur" = "$v" ] && continue
            p="$(sysctl_path "$k")"
            [ -e "$p" ] || continue
            if printf '%s\n' "${v//	/ }" | as_root tee "$p" >/dev/null 2>&1; then
                [ "$pass" = 1 ] && log "restored sysctl $k = $v (was $cur)"
                restored=$((restored + 1))
            else
                log "WARNING: could not restore sysctl $k = $v (is $cur)"
            fi
        done <"$base"
        rm -f "$now"
    done
    return 0
}

ipt_tools() {
    local t
    for t in iptables ip6tables; do command -v "$t" >/dev/null 2>&1 && echo "$t"; done
    return 0
}

snapshot_firewall() { # DIR
    local dir="$1" ipt table
    mkdir -p "$dir"
    for ipt in $(ipt_tools); do
        for table in filter nat mangle raw; do
            as_root "$ipt" -w 5 -t "$table" -S 2>/dev/null >"$dir/$ipt-$table" || : >"$dir/$ipt-$table"
        done
    done
    if command -v nft >/dev/null 2>&1; then
        as_root nft list tables 2>/dev/null >"$dir/nft-tables" || : >"$dir/nft-tables"
    fi
}

# Deletes rules and chains that appeared since the snapshot and belong to
# container networking (CNI-*, NETAVARK*, the podman network, kind, KUBE-*
# chains that leaked to the host), then nftables tables that appeared and are
# empty.
restore_firewall() { # DIR
    local dir="$1" ipt table line chain
    [ -d "$dir" ] || return 0
    local ours="(CNI-|NETAVARK|KIND|KUBE-|$kind_network|${kind_node_subnet%/*})"
    for ipt in $(ipt_tools); do
        for table in filter nat mangle raw; do
            [ -f "$dir/$ipt-$table" ] || continue
            local now
            now="$(as_root "$ipt" -w 5 -t "$table" -S 2>/dev/null || true)"
            # rules first (in built-in chains too), then our chains
            while IFS= read -r line; do
                [[ "$line" == "-A "* ]] || continue
                grep -qxF -- "$line" "$dir/$ipt-$table" && continue
                [[ "$line" =~ $ours ]] || continue
                if eval "as_root \"\$ipt\" -w 5 -t \"\$table\" -D ${line#-A }" 2>/dev/null; then
                    log "removed $ipt -t $table rule: $line"
                fi
            done <<<"$now"
            while IFS= read -r line; do
                [[ "$line" == "-N "* ]] || continue
                grep -qxF -- "$line" "$dir/$ipt-$table" && continue
                chain="${line#-N }"
                [[ "$chain" =~ ^(CNI-|NETAVARK|KIND|KUBE-) ]] || continue
                as_root "$ipt" -w 5 -t "$table" -F "$chain" 2>/dev/null || true
            done <<<"$now"
            while IFS= read -r line; do
                [[ "$line" == "-N "* ]] || continue
                grep -qxF -- "$line" "$dir/$ipt-$table" && continue
                chain="${line#-N }"
                [[ "$chain" =~ ^(CNI-|NETAVARK|KIND|KUBE-) ]] || continue
                if as_root "$ipt" -w 5 -t "$table" -X "$chain" 2>/dev/null; then
                    log "removed $ipt -t $table chain $chain"
                else
                    log "WARNING: could not remove $ipt -t $table chain $chain"
                fi
            done <<<"$now"
        done
    done
    if [ -f "$dir/nft-tables" ] && command -v nft >/dev/null 2>&1; then
        local t
        while IFS= read -r t; do
            [ -n "$t" ] || continue
            grep -qxF -- "$t" "$dir/nft-tables" && continue
            # only tables that are empty now (nothing but base chains)
            # shellcheck disable=SC2086 # "table FAMILY NAME"
            if ! as_root nft list $t 2>/dev/null | grep -qE '^[[:space:]]+(ip|ip6|meta|iif|oif|ct|tcp|udp|counter|jump|goto|accept|drop|return|masquerade|dnat|snat|mark|fib)'; then
                # shellcheck disable=SC2086
                as_root nft delete $t 2>/dev/null && log "removed nftables $t (created during the run, now empty)"
            fi
        done < <(as_root nft list tables 2>/dev/null || true)
    fi
}

# Lists what differs from the recorded state; exit 1 if anything does.
check_host() {
    local base="${1:-$state/baseline}" bad=0 now
    if [ "$provider" = podman ]; then
        local c v n
        c="$(podman ps -a --format '{{.Names}}' 2>/dev/null || true)"
        v="$(podman volume ls -q 2>/dev/null || true)"
        n="$(podman network ls --format '{{.Name}}' 2>/dev/null | grep -vx podman || true)"
        [ -z "$c" ] || { log "left: podman containers: $c"; bad=1; }
        [ -z "$v" ] || { log "left: podman volumes: $v"; bad=1; }
        [ -z "$n" ] || { log "left: podman networks: $n"; bad=1; }
        # and nothing in the host's own podman store either
        c="$(env -u CONTAINERS_CONF -u CONTAINERS_STORAGE_CONF podman ps -a --filter "label=io.x-k8s.kind.cluster" --format '{{.Names}}' 2>/dev/null || true)"
        [ -z "$c" ] || { log "left: kind containers in the host's podman store: $c"; bad=1; }
    else
        local c
        c="$(docker ps -a --filter "label=io.x-k8s.kind.cluster=$KIND_CLUSTER_NAME" --format '{{.Names}}' 2>/dev/null || true)"
        [ -z "$c" ] || { log "left: docker containers: $c"; bad=1; }
        ! docker network inspect "$kind_network" >/dev/null 2>&1 || { log "left: docker network $kind_network"; bad=1; }
    fi
    if [ -s "$base/sysctls" ]; then
        now="$(mktemp)"
        snapshot_sysctls "$now"
        local k v cur
        while IFS=$'\t' read -r k v; do
            cur="$(grep -m1 "^$k	" "$now" | cut -f2- || true)"
            [ "$cur" = "$v" ] || [ -z "$cur" ] || { log "changed: sysctl $k = $cur (was $v)"; bad=1; }
        done <"$base/sysctls"
        rm -f "$now"
    fi
    local ipt table
    for ipt in $(ipt_tools); do
        for table in filter nat mangle raw; do
            local chains
            chains="$(as_root "$ipt" -w 5 -t "$table" -S 2>/dev/null | grep -E '^-N (CNI-|NETAVARK|KIND|KUBE-)' || true)"
            if [ -n "$chains" ] && [ -f "$base/firewall/$ipt-$table" ]; then
                chains="$(grep -vxFf "$base/firewall/$ipt-$table" <<<"$chains" || true)"
            fi
            [ -z "$chains" ] || { log "left: $ipt -t $table chains: $(echo "$chains" | tr '\n' ' ')"; bad=1; }
        done
    done
    if [ -f "$base/links" ]; then
        local links
        links="$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -vxFf "$base/links" || true)"
        [ -z "$links" ] || { log "left: network interfaces: $(echo "$links" | tr '\n' ' ')"; bad=1; }
    fi
    if ip -o addr show 2>/dev/null | grep -qF " ${kind_node_subnet%.*}."; then
        log "left: an interface with an address in $kind_node_subnet"
        bad=1
    fi
    if [ "$provider" = podman ] && [ -z "$(podman ps -aq 2>/dev/null || true)" ]; then
        rm -rf /run/nodemedic-kind 2>/dev/null || true # podman's run root, recreated by the queries above
    fi
    [ "$bad" = 0 ] && log "host is clean (no containers, volumes, networks, chains left; sysctls as before)"
    return "$bad"
}

# ---------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------
do_down() {
    log "down: $KIND_CLUSTER_NAME ($provider)"
    if have_kind; then
        kind delete cluster --name "$KIND_CLUSTER_NAME" >&2 2>/dev/null || log "WARNING: kind delete cluster failed; removing containers directly"
    fi
    local ids
    ids="$("$engine" ps -aq --filter "label=io.x-k8s.kind.cluster=$KIND_CLUSTER_NAME" 2>/dev/null || true)"
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        "$engine" rm -f -v $ids >/dev/null 2>&1 || log "WARNING: could not remove containers $ids"
    fi
    if [ "$provider" = podman ]; then
        ids="$(podman volume ls -q --filter "label=$KIND_CLUSTER_NAME-control-plane" 2>/dev/null || true)"
        # shellcheck disable=SC2086
        [ -z "$ids" ] || podman volume rm -f $ids >/dev/null 2>&1 || true
        podman volume prune -f >/dev/null 2>&1 || true # the store is private to this tier
    fi
    if network_exists; then
        "$engine" network rm -f "$kind_network" >/dev/null 2>&1 || "$engine" network rm "$kind_network" >/dev/null 2>&1 ||
            log "WARNING: could not remove the $engine network $kind_network"
    fi
    if [ "$provider" = podman ]; then
        # host-local IPAM state of the podman network
        rm -rf "/var/lib/cni/networks/$kind_network" 2>/dev/null || true
        rm -f /var/lib/cni/results/"$kind_network"-* 2>/dev/null || true
        if [ -f "$state/baseline/no-var-lib-cni" ]; then
            rmdir /var/lib/cni/networks /var/lib/cni/results /var/lib/cni 2>/dev/null || true
        fi
    fi
    if [ -d "$state/baseline" ]; then
        restore_firewall "$state/baseline/firewall"
        restore_sysctls "$state/baseline/sysctls"
    fi
    if [ "$provider" = podman ] && [ -z "$(podman ps -aq 2>/dev/null || true)" ]; then
        rm -rf /run/nodemedic-kind 2>/dev/null || true
    fi
    if [ -d "$state/baseline" ]; then
        # kept for `check-host` after the state dir is gone
        rm -rf "$state.last-baseline"
        mv "$state/baseline" "$state.last-baseline"
    fi
    rm -rf "$state"
    log "down: done ($(elapsed))"
}

# ---------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------
write_kind_config() {
    local cni=""
    [ "$provider" = podman ] && cni="
  # no kindnetd here: the node image carries a static bridge CNI config
  disableDefaultCNI: true"
    cat <<EOF
# written by tests/kind/cluster.sh
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  apiServerAddress: 127.0.0.1
  podSubnet: $kind_pod_subnet
  serviceSubnet: $kind_service_subnet$cni
nodes:
  - role: control-plane
kubeadmConfigPatches:
  - |
    kind: KubeletConfiguration
    # cgroup v1 hosts (this VM is cgroup v1 hybrid)
    failCgroupV1: false
    # no negative OOM scores without CAP_SYS_RESOURCE
    oomScoreAdj: 0
  - |
    kind: KubeProxyConfiguration
    oomScoreAdj: 0
EOF
}

# Nothing from the node network leaves the machine: the host forwards
# nothing from it to any other destination (CoreDNS's upstream included).
# First in FORWARD, ahead of the CNI plugins' ACCEPT rules; removed by `down`.
isolate_network() {
    local rule=(-s "$kind_node_subnet" ! -d "$kind_node_subnet" -m comment --comment "$kind_network: nothing leaves the machine" -j REJECT)
    while as_root iptables -w 5 -D FORWARD "${rule[@]}" 2>/dev/null; do :; done
    as_root iptables -w 5 -I FORWARD 1 "${rule[@]}" || kind_die "could not insert the FORWARD isolation rule"
}

diagnose() {
    log "---- diagnostics ----"
    local node="$KIND_CLUSTER_NAME-control-plane"
    "$engine" ps -a --filter "label=io.x-k8s.kind.cluster=$KIND_CLUSTER_NAME" >&2 2>/dev/null || true
    if "$engine" inspect "$node" >/dev/null 2>&1; then
        "$engine" logs "$node" 2>&1 | tail -n 30 >&2 || true
        "$engine" exec "$node" systemctl --failed --no-pager >&2 2>/dev/null || true
        "$engine" exec "$node" journalctl -u nodemedic-images -u containerd -u kubelet --no-pager -n 40 >&2 2>/dev/null || true
        "$engine" exec "$node" crictl ps -a >&2 2>/dev/null || true
    fi
    if [ -s "$kubeconfig" ]; then
        kubectl --kubeconfig "$kubeconfig" get nodes,pods -A -o wide >&2 2>/dev/null || true
        kubectl --kubeconfig "$kubeconfig" get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
    fi
    log "---------------------"
}

do_up() {
    # leftovers of an earlier (killed) run go first
    if [ -d "$state" ] || cluster_exists || network_exists ||
        [ -n "$("$engine" ps -aq --filter "label=io.x-k8s.kind.cluster=$KIND_CLUSTER_NAME" 2>/dev/null || true)" ]; then
        log "up: cleaning leftovers of an earlier run first"
        do_down
    fi
    if ! have_kind || { [ "$provider" = podman ] && [ ! -s "$kind_cache/node-image.ref" ]; }; then
        log "up: kind or the node image is missing; running tests/kind/provision.sh"
        "$kind_dir/provision.sh" >/dev/null
    fi
    if [ "$provider" = podman ] && [ "$(id -u)" != 0 ]; then
        kind_die "the podman provider runs rootful podman here: run as root (or use a machine with Docker)"
    fi
    local image
    image="$(kind_node_image "$provider")"
    if [ "$provider" = podman ] && [ -z "${KIND_NODE_IMAGE:-}" ]; then
        podman image exists "$image" || kind_die "node image $image is not in the tier's podman store: run tests/kind/provision.sh"
        local subnet
        subnet="$(podman image inspect --format '{{index .Config.Labels "io.nodemedic.kind.pod-subnet"}}' "$image" 2>/dev/null || true)"
        [ "$subnet" = "$kind_pod_subnet" ] ||
            kind_die "node image $image has pod subnet '$subnet', this run wants $kind_pod_subnet: run tests/kind/provision.sh"
    fi

    mkdir -p "$state/baseline"
    snapshot_sysctls "$state/baseline/sysctls"
    snapshot_firewall "$state/baseline/firewall"
    [ -d /var/lib/cni ] || : >"$state/baseline/no-var-lib-cni"
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' >"$state/baseline/links" || true
    echo "$provider" >"$state/provider"
    log "up: recorded host state in $state/baseline"

    local t=$SECONDS
    if [ "$provider" = podman ]; then
        podman network create --driver bridge --subnet "$kind_node_subnet" "$kind_network" >/dev/null
        isolate_network
    else
        docker network create --driver bridge --subnet "$kind_node_subnet" \
            -o com.docker.network.bridge.enable_ip_masquerade=true "$kind_network" >/dev/null
    fi
    write_kind_config >"$state/kind-config.yaml"
    log "up: network $kind_network ($kind_node_subnet); creating cluster $KIND_CLUSTER_NAME from $image"
    if ! kind create cluster --name "$KIND_CLUSTER_NAME" --image "$image" --config "$state/kind-config.yaml" \
        --kubeconfig "$kubeconfig" --wait 0s >&2; then
        up_failed "kind create cluster failed"
    fi
    [ "$provider" = podman ] && isolate_network
    log "up: kind create cluster done ($((SECONDS - t))s)"
    t=$SECONDS
    kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready node --all --timeout=180s >&2 ||
        up_failed "the node did not become Ready"
    log "up: node Ready ($((SECONDS - t))s)"
    t=$SECONDS
    kubectl --kubeconfig "$kubeconfig" -n kube-system rollout status deployment/coredns --timeout=180s >&2 ||
        up_failed "CoreDNS did not become available"
    log "up: CoreDNS running ($((SECONDS - t))s); cluster up in $(elapsed)"
    echo "$kubeconfig"
}

up_failed() {
    log "up: FAILED: $*"
    diagnose
    if [ "${NODEMEDIC_KIND_KEEP_ON_FAILURE:-0}" = 1 ]; then
        log "up: leaving the failed cluster (NODEMEDIC_KIND_KEEP_ON_FAILURE=1); clean it with: tests/kind/cluster.sh down"
    else
        do_down
    fi
    exit 1
}

do_status() {
    echo "provider:   $provider"
    echo "cluster:    $KIND_CLUSTER_NAME ($(cluster_exists && echo exists || echo absent))"
    echo "network:    $kind_network ($(network_exists && echo exists || echo absent))"
    echo "kubeconfig: $kubeconfig$([ -s "$kubeconfig" ] || echo ' (none)')"
    if [ "$provider" = podman ]; then
        echo "node image: $(cat "$kind_cache/node-image.ref" 2>/dev/null || echo 'not built (run tests/kind/provision.sh)')"
    else
        echo "node image: $(kind_node_image docker)"
    fi
    if [ -s "$kubeconfig" ] && cluster_exists; then
        kubectl --kubeconfig "$kubeconfig" get nodes -o wide 2>/dev/null || true
    fi
}

do_env() {
    local v
    for v in PATH KIND_CLUSTER_NAME KIND_EXPERIMENTAL_PROVIDER CONTAINERS_CONF CONTAINERS_STORAGE_CONF \
        CONTAINERS_REGISTRIES_CONF KIND_EXPERIMENTAL_PODMAN_NETWORK KIND_EXPERIMENTAL_DOCKER_NETWORK; do
        [ -n "${!v:-}" ] && printf 'export %s=%q\n' "$v" "${!v}"
    done
    printf 'export KUBECONFIG=%q\n' "$kubeconfig"
}

# up/down/load of one cluster never run at the same time. The lock is fd 9;
# the container tools must not inherit it (podman's conmon lives as long as
# the node and would hold the lock forever), hence these wrappers.
kind() { command kind "$@" 9>&-; }
podman() { command podman "$@" 9>&-; }
docker() { command docker "$@" 9>&-; }
lock_cluster() {
    mkdir -p "$kind_cache/clusters"
    exec 9>"$kind_cache/clusters/.$KIND_CLUSTER_NAME.lock"
    flock -w 900 9 || kind_die "another tests/kind/cluster.sh holds $kind_cache/clusters/.$KIND_CLUSTER_NAME.lock"
}

case "$cmd" in
    up) lock_cluster; do_up ;;
    down) lock_cluster; do_down ;;
    status) do_status ;;
    kubeconfig) echo "$kubeconfig" ;;
    env) do_env ;;
    load)
        lock_cluster
        [ "$#" -gt 0 ] || kind_die "usage: tests/kind/cluster.sh load FILE.tar..."
        cluster_exists || kind_die "cluster $KIND_CLUSTER_NAME does not exist: run tests/kind/cluster.sh up"
        for f in "$@"; do
            t=$SECONDS
            kind load image-archive "$f" --name "$KIND_CLUSTER_NAME" >&2
            log "loaded $f ($((SECONDS - t))s)"
        done
        ;;
    check-host)
        base="${1:-$state/baseline}"
        [ -d "$base" ] || base="$state.last-baseline"
        check_host "$base"
        ;;
    -h | --help | "") sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
    *) kind_die "unknown command '$cmd' (up|down|status|kubeconfig|env|load|check-host)" ;;
esac
