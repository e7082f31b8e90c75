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
# Topology: one node by default; NODEMEDIC_KIND_WORKERS=2 adds two workers
# (the three-node tier). Without kindnetd (podman mode: the node image has a
# static bridge CNI config), `up` then does what kindnetd would: each node
# gets a bridge config for its own podCIDR and a route to every other node's
# podCIDR via that node's IP; the host's firewall passes node<->pod traffic
# between the node containers and rejects pod traffic that would leave the
# machine. With Docker, kind's own kindnetd does this.
#
# Environment: KIND_CLUSTER_NAME (default nodemedic-e2e; every name has a
# network and node subnet of its own, see lib.sh), NODEMEDIC_KIND_WORKERS,
# KIND_NODE_IMAGE, NODEMEDIC_KIND_PROVIDER, NODEMEDIC_KIND_CACHE,
# NODEMEDIC_KIND_KEEP_ON_FAILURE=1 (leave a failed `up` for debugging; `down`
# still cleans it later).
set -euo pipefail

# shellcheck source=tests/kind/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd="${1:-}"
[ "$#" -gt 0 ] && shift
# A cluster made with workers keeps its topology for later commands (down,
# status, env) run without NODEMEDIC_KIND_WORKERS.
if [ -z "${NODEMEDIC_KIND_WORKERS:-}" ] && [ "$cmd" != up ] && [ -s "$(kind_state_dir)/workers" ]; then
    NODEMEDIC_KIND_WORKERS="$(cat "$(kind_state_dir)/workers")"
    export NODEMEDIC_KIND_WORKERS
    # shellcheck source=tests/kind/lib.sh
    . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fi
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
# Other clusters of this tier that exist now (other names, same cache).
other_clusters() {
    have_kind || return 0
    local c
    for c in $(kind get clusters 2>/dev/null); do
        [ "$c" != "$KIND_CLUSTER_NAME" ] && [ -d "$kind_cache/clusters/$c/baseline" ] && echo "$c"
    done
    return 0
}
# The tier's other networks (their rules and chains are not ours).
other_networks() {
    "$engine" network ls --format '{{.Name}}' 2>/dev/null | grep -E '^nodemedic-kind(-|$)' | grep -vxF "$kind_network" || true
}

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
    local ours="(CNI-|NETAVARK|KIND|KUBE-|$kind_network(:|\\\\\")|${kind_node_subnet%.*}\\.)"
    if [ -n "$(other_networks)" ]; then
        # another cluster of the tier is up: its CNI rules are not ours
        ours="(KIND|KUBE-|$kind_network(:|\\\\\")|${kind_node_subnet%.*}\\.)"
    fi
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
            # new chains that no remaining rule jumps to (a chain another
            # cluster still uses stays); repeated, since removing one chain
            # can free the chains it jumped to
            local pass removed
            for pass in 1 2 3 4; do
                removed=0
                now="$(as_root "$ipt" -w 5 -t "$table" -S 2>/dev/null || true)"
                while IFS= read -r line; do
                    [[ "$line" == "-N "* ]] || continue
                    grep -qxF -- "$line" "$dir/$ipt-$table" && continue
                    chain="${line#-N }"
                    [[ "$chain" =~ ^(CNI-|NETAVARK|KIND|KUBE-) ]] || continue
                    # referenced from outside the chain itself?
                    if grep -v -- "^-A $chain " <<<"$now" | grep -qE -- "-[jg] $chain( |\$)"; then
                        [ "$pass" = 4 ] && log "kept $ipt -t $table chain $chain (still used)"
                        continue
                    fi
                    as_root "$ipt" -w 5 -t "$table" -F "$chain" 2>/dev/null || true
                    if as_root "$ipt" -w 5 -t "$table" -X "$chain" 2>/dev/null; then
                        log "removed $ipt -t $table chain $chain"
                        removed=1
                    else
                        log "WARNING: could not remove $ipt -t $table chain $chain"
                    fi
                done <<<"$now"
                [ "$removed" = 1 ] || break
            done
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
    if [ -f "$base/no-lib-modules" ] && [ -d /lib/modules ] && [ -z "$(other_clusters)" ]; then
        log "left: /lib/modules (made for the node containers' mount)"
        bad=1
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
        local n
        for n in "$KIND_CLUSTER_NAME"-{control-plane,worker,worker2,worker3,worker4}; do # kind labels each node's /var volume with its name
            ids="$(podman volume ls -q --filter "label=$n" 2>/dev/null || true)"
            # shellcheck disable=SC2086
            [ -z "$ids" ] || podman volume rm -f $ids >/dev/null 2>&1 || true
        done
        # the store is private to this tier; but another cluster may be starting
        [ -n "$(podman ps -aq 2>/dev/null || true)" ] || podman volume prune -f >/dev/null 2>&1 || true
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
    if [ -f "$state/baseline/no-lib-modules" ] && [ -z "$(other_clusters)" ]; then
        rmdir /lib/modules 2>/dev/null || true
    fi
    if [ -d "$state/baseline" ]; then
        restore_firewall "$state/baseline/firewall"
        local others
        others="$(other_clusters | tr '\n' ' ')"
        if [ -n "$others" ]; then
            # host-wide sysctls are shared: the last cluster to go restores them
            log "down: clusters $others still exist; their down restores the host's sysctls"
            [ -s "$state/baseline/sysctls" ] && cp "$state/baseline/sysctls" "$kind_cache/clusters/${others%% *}/baseline/sysctls"
        else
            restore_sysctls "$state/baseline/sysctls"
        fi
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
# kindnetd (kind's default CNI) where the node image has it (kindest/node);
# else the node image's static bridge config, routed across nodes by `up`.
static_cni() { kind_static_cni "$provider"; }

# The host bridge of the node containers' network.
network_bridge() {
    if [ "$provider" = podman ]; then
        podman network inspect "$kind_network" --format '{{.NetworkInterface}}' 2>/dev/null
    else
        local id
        id="$(docker network inspect "$kind_network" --format '{{.Id}}' 2>/dev/null)" && echo "br-${id:0:12}"
    fi
}

write_kind_config() {
    local cni="" workers="" i
    static_cni && cni="
  # no kindnetd here: the node image carries a static bridge CNI config
  disableDefaultCNI: true"
    for ((i = 1; i <= kind_workers; i++)); do workers="$workers
  - role: worker"; done
    cat <<EOF
# written by tests/kind/cluster.sh
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  apiServerAddress: 127.0.0.1
  podSubnet: $kind_cluster_pod_subnet
  serviceSubnet: $kind_service_subnet$cni
nodes:
  - role: control-plane$workers
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

# Pod traffic between the node containers (podman mode with workers). The
# host bridges frames between the nodes through its own iptables
# (bridge-nf-call-iptables): let node<->pod and pod<->pod traffic pass on the
# network's bridge, without masquerading; reject pod traffic that would leave
# through any other interface. Ahead of the isolation rule; `down` removes
# them (their comments name the network).
route_pods_firewall() {
    local br
    br="$(network_bridge || true)"
    [ -n "$br" ] || kind_die "cannot find the host bridge of $provider network $kind_network"
    local pods="$kind_cluster_pod_subnet" nodes="$kind_node_subnet" c="$kind_network:"
    local -a rules=(
        # inserted in this order at the top: the last one ends up first
        "filter FORWARD -i $br -o $br -s $pods -m comment --comment '$c pod traffic between nodes' -j ACCEPT"
        "filter FORWARD -i $br -o $br -s $nodes -d $pods -m comment --comment '$c node to pod between nodes' -j ACCEPT"
        "filter FORWARD -i $br ! -o $br -s $pods -m comment --comment '$c pods never leave the machine' -j REJECT"
        "nat POSTROUTING -s $nodes -d $pods -m comment --comment '$c no masquerade from nodes to pods' -j RETURN"
    )
    local r table chain spec
    for r in "${rules[@]}"; do
        read -r table chain spec <<<"$r"
        while eval "as_root iptables -w 5 -t $table -D $chain $spec" 2>/dev/null; do :; done
        eval "as_root iptables -w 5 -t $table -I $chain 1 $spec" || kind_die "could not insert iptables -t $table $chain $spec"
    done
}

ip_to_int() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    echo $(((a << 24) + (b << 16) + (c << 8) + d))
}
in_cidr() { # IP CIDR
    local len="${2#*/}" mask
    mask=$(((0xFFFFFFFF << (32 - len)) & 0xFFFFFFFF))
    [ $(($(ip_to_int "$1") & mask)) = $(($(ip_to_int "${2%/*}") & mask)) ]
}

# What kindnetd does, once: each node's bridge config for its own podCIDR,
# and a route to every other node's podCIDR via that node's IP. Pods that
# started under the image's single-node config (CoreDNS) are recreated.
setup_pod_routes() {
    local kc=(kubectl --kubeconfig "$kubeconfig") n cidr ip i j deadline=$((SECONDS + 120))
    local -a names=() cidrs=() ips=()
    for n in $(kind_node_names); do
        cidr=""
        until cidr="$("${kc[@]}" get node "$n" -o jsonpath='{.spec.podCIDR}' 2>/dev/null)" && [ -n "$cidr" ]; do
            [ "$SECONDS" -lt "$deadline" ] || up_failed "node $n has no podCIDR 120 s after kind create (kube-controller-manager allocates them from $kind_cluster_pod_subnet)"
            sleep 1
        done
        ip="$("${kc[@]}" get node "$n" -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')"
        in_cidr "${cidr%/*}" "$kind_cluster_pod_subnet" || up_failed "node $n got podCIDR $cidr outside $kind_cluster_pod_subnet"
        in_cidr "$ip" "$kind_node_subnet" || up_failed "node $n has InternalIP '$ip', not in $kind_node_subnet"
        names+=("$n") cidrs+=("$cidr") ips+=("$ip")
    done
    for i in "${!names[@]}"; do
        n="${names[$i]}"
        sed -e "s#@POD_SUBNET@#${cidrs[$i]}#" -e 's/"ipMasq": true/"ipMasq": false/' \
            -e 's/"isGateway": true,/"isGateway": true,\n      "forceAddress": true,/' \
            "$kind_dir/node/10-nodemedic-bridge.conflist" |
            "$engine" exec -i "$n" sh -c 'f=/etc/cni/net.d/10-nodemedic-bridge.conflist && cat >"$f.new" && mv "$f.new" "$f"' ||
            up_failed "could not write the CNI config of $n"
        for j in "${!names[@]}"; do
            [ "$i" = "$j" ] && continue
            "$engine" exec "$n" ip route replace "${cidrs[$j]}" via "${ips[$j]}" ||
                up_failed "could not route ${cidrs[$j]} via ${ips[$j]} on $n"
        done
        log "up: $n (${ips[$i]}) pods ${cidrs[$i]}, routes to the other nodes' pods"
    done
    sleep 2 # containerd reloads the CNI config on a file event
    local stale
    stale="$("${kc[@]}" get pods -A -o json | jq -r '.items[] | select(.spec.hostNetwork != true and .status.podIP != null and .spec.nodeName != null) | "\(.metadata.namespace) \(.metadata.name) \(.spec.nodeName) \(.status.podIP)"')"
    local ns name node pip
    while read -r ns name node pip; do
        [ -n "$ns" ] || continue
        for i in "${!names[@]}"; do
            if [ "${names[$i]}" = "$node" ] && ! in_cidr "$pip" "${cidrs[$i]}"; then
                log "up: recreating $ns/$name ($pip on $node, outside ${cidrs[$i]})"
                "${kc[@]}" -n "$ns" delete pod "$name" --wait=false >/dev/null
            fi
        done
    done <<<"$stale"
}

diagnose() {
    log "---- diagnostics ----"
    "$engine" ps -a --filter "label=io.x-k8s.kind.cluster=$KIND_CLUSTER_NAME" >&2 2>/dev/null || true
    local node
    for node in $(kind_node_names); do
        "$engine" inspect "$node" >/dev/null 2>&1 || continue
        log "-- $node"
        "$engine" logs "$node" 2>&1 | tail -n 30 >&2 || true
        "$engine" exec "$node" systemctl --failed --no-pager >&2 2>/dev/null || true
        "$engine" exec "$node" journalctl -u nodemedic-images -u containerd -u kubelet --no-pager -n 40 >&2 2>/dev/null || true
        "$engine" exec "$node" crictl ps -a >&2 2>/dev/null || true
        "$engine" exec "$node" ip route >&2 2>/dev/null || true
    done
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
    local other
    other="$(other_clusters | head -n1)"
    if [ -n "$other" ] && [ -s "$kind_cache/clusters/$other/baseline/sysctls" ]; then
        # that cluster already changed host-wide sysctls: its baseline is the host's
        cp "$kind_cache/clusters/$other/baseline/sysctls" "$state/baseline/sysctls"
        log "up: cluster $other exists; sharing its record of the host's sysctls"
    else
        snapshot_sysctls "$state/baseline/sysctls"
    fi
    snapshot_firewall "$state/baseline/firewall"
    [ -d /var/lib/cni ] || : >"$state/baseline/no-var-lib-cni"
    # kind mounts /lib/modules into its nodes; Docker creates it when missing
    [ -d /lib/modules ] || : >"$state/baseline/no-lib-modules"
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' >"$state/baseline/links" || true
    echo "$provider" >"$state/provider"
    log "up: recorded host state in $state/baseline"

    local t=$SECONDS
    if ip route show "$kind_node_subnet" 2>/dev/null | grep -q .; then
        up_failed "the node subnet $kind_node_subnet is already routed on this host (another network uses it): set NODEMEDIC_KIND_NODE_SUBNET to a free /24 in 198.18.0.0/15"
    fi
    echo "$kind_workers" >"$state/workers"
    if static_cni && [ "$kind_workers" -gt 0 ]; then
        # fixed node IPs and name entries for the podman shim (no DNS between containers)
        local i=0 n
        for n in $(kind_node_names); do
            echo "${kind_node_subnet%.*}.$((2 + i)) $n"
            i=$((i + 1))
        done >"$state/node-hosts"
        export NODEMEDIC_KIND_NODE_HOSTS="$state/node-hosts"
    fi
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
    # Docker's own FORWARD rules let its networks out: the isolation rule
    # goes first under either engine.
    isolate_network
    log "up: kind create cluster done ($((SECONDS - t))s)"
    if static_cni && [ "$kind_workers" -gt 0 ]; then
        t=$SECONDS
        route_pods_firewall
        setup_pod_routes
        log "up: pod routes between $((kind_workers + 1)) nodes ($((SECONDS - t))s)"
    fi
    t=$SECONDS
    local nodes
    nodes="$(kubectl --kubeconfig "$kubeconfig" get nodes -o name 2>/dev/null | wc -l)"
    [ "$nodes" = "$((kind_workers + 1))" ] || up_failed "the cluster has $nodes nodes, expected $((kind_workers + 1))"
    kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready node --all --timeout=180s >&2 ||
        up_failed "the nodes did not become Ready"
    log "up: $nodes node(s) Ready ($((SECONDS - t))s)"
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
    for v in PATH KIND_CLUSTER_NAME NODEMEDIC_KIND_WORKERS KIND_EXPERIMENTAL_PROVIDER CONTAINERS_CONF CONTAINERS_STORAGE_CONF \
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
