# shellcheck shell=bash disable=SC2034
# Shared settings of the kind tier (sourced by provision.sh, cluster.sh,
# smoke.sh, e2e.sh). Every value can be overridden from the environment.
#
# Provider: with a working Docker engine (`docker info` succeeds) kind's
# docker provider and the public kindest/node image are used; otherwise the
# podman provider with a private podman config/store and a node image built
# locally by provision.sh. NODEMEDIC_KIND_PROVIDER=docker|podman forces one.

KIND_VERSION=v0.33.0
K8S_VERSION=1.36.3
CONTAINERD_VERSION=v2.3.4 # what kind v0.33.0's base image ships
CRICTL_VERSION=v1.36.0
COREDNS_VERSION=v1.14.2
# The images kubeadm v1.36.3 asks for (`kubeadm config images list`).
ETCD_IMAGE_TAG=3.6.8-0
PAUSE_IMAGE_TAG=3.10.2
COREDNS_IMAGE="registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
# Debian suite of the node image built here.
NODE_DEBIAN_SUITE=bookworm

kind_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_dir="$(cd "$kind_dir/../.." && pwd)"

kind_default_cluster=nodemedic-e2e
KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-$kind_default_cluster}"
kind_cache="${NODEMEDIC_KIND_CACHE:-$HOME/.cache/nodemedic/kind}"
envtest_dir="${NODEMEDIC_ENVTEST_DIR:-$HOME/.cache/nodemedic/envtest}/$K8S_VERSION"

kind_die() {
    echo "kind-tier: ERROR: $*" >&2
    exit 1
}

# Topology: one control plane plus NODEMEDIC_KIND_WORKERS workers (default 0:
# a single node that runs everything; the three-node tier sets 2).
kind_workers="${NODEMEDIC_KIND_WORKERS:-0}"
case "$kind_workers" in
    0 | 1 | 2 | 3 | 4) ;;
    *) kind_die "NODEMEDIC_KIND_WORKERS must be a number of workers from 0 to 4 (got '$kind_workers')" ;;
esac
[[ "$KIND_CLUSTER_NAME" =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] ||
    kind_die "KIND_CLUSTER_NAME must be 1 to 32 lowercase letters, digits and '-' (got '$KIND_CLUSTER_NAME')"

# Addresses: everything from the benchmarking block 198.18.0.0/15, never
# 10/8, 172.16/12 or 192.168/16. Nothing is routed off the machine.
#
# Each cluster name gets a network of its own (name and subnet), so that
# clusters of different names can exist side by side (CI's and a developer's):
# the default cluster keeps nodemedic-kind / 198.18.0.0/24; any other name
# gets nodemedic-kind-<name> and a /24 from 198.18.1.0-198.18.62.0 picked by a
# hash of the name (set NODEMEDIC_KIND_NODE_SUBNET if two names collide).
if [ "$KIND_CLUSTER_NAME" = "$kind_default_cluster" ]; then
    kind_node_subnet="${NODEMEDIC_KIND_NODE_SUBNET:-198.18.0.0/24}" # podman/docker network of the node containers
    kind_network="${NODEMEDIC_KIND_NETWORK:-nodemedic-kind}"
else
    kind_node_subnet="${NODEMEDIC_KIND_NODE_SUBNET:-198.18.$((1 + $(printf '%s' "$KIND_CLUSTER_NAME" | cksum | cut -d' ' -f1) % 62)).0/24}"
    kind_network="${NODEMEDIC_KIND_NETWORK:-nodemedic-kind-$KIND_CLUSTER_NAME}"
fi
# The pod range baked into the node image's single-node CNI config (part of
# the image's key: provision.sh rebuilds the image when it changes).
kind_pod_subnet="${NODEMEDIC_KIND_POD_SUBNET:-198.18.64.0/24}"
# The cluster's pod range (kubeadm's podSubnet): with one node, the node's
# podCIDR is all of it; with workers, kube-controller-manager gives each node a
# /24 of a /18 and cluster.sh routes each node's /24 to the others.
if [ "$kind_workers" = 0 ]; then
    kind_cluster_pod_subnet="$kind_pod_subnet"
else
    kind_cluster_pod_subnet="${NODEMEDIC_KIND_CLUSTER_POD_SUBNET:-198.18.64.0/18}"
fi
kind_service_subnet="${NODEMEDIC_KIND_SERVICE_SUBNET:-198.19.0.0/20}"

# kind_check_range NAME CIDR: CIDR is an IPv4 range inside 198.18.0.0/15 or
# 192.0.2.0/24 (the only blocks this tier may use).
kind_check_range() {
    local what="$1" cidr="$2" a b c d len
    if ! [[ "$cidr" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})/([0-9]{1,2})$ ]]; then
        kind_die "$what: '$cidr' is not an IPv4 CIDR (a.b.c.d/len)"
    fi
    a=${BASH_REMATCH[1]} b=${BASH_REMATCH[2]} c=${BASH_REMATCH[3]} d=${BASH_REMATCH[4]} len=${BASH_REMATCH[5]}
    [ "$a" -le 255 ] && [ "$b" -le 255 ] && [ "$c" -le 255 ] && [ "$d" -le 255 ] && [ "$len" -le 32 ] ||
        kind_die "$what: '$cidr' is not a valid IPv4 CIDR"
    if { [ "$a" = 198 ] && { [ "$b" = 18 ] || [ "$b" = 19 ]; } && [ "$len" -ge 15 ]; } ||
        { [ "$a" = 192 ] && [ "$b" = 0 ] && [ "$c" = 2 ] && [ "$len" -ge 24 ]; }; then
        return 0
    fi
    kind_die "$what: '$cidr' is outside 198.18.0.0/15 and 192.0.2.0/24; this tier never uses other ranges (10/8, 172.16/12 and 192.168/16 least of all)"
}
kind_check_range NODEMEDIC_KIND_NODE_SUBNET "$kind_node_subnet"
kind_check_range NODEMEDIC_KIND_POD_SUBNET "$kind_pod_subnet"
kind_check_range NODEMEDIC_KIND_CLUSTER_POD_SUBNET "$kind_cluster_pod_subnet"
kind_check_range NODEMEDIC_KIND_SERVICE_SUBNET "$kind_service_subnet"

# kind's node container names, control plane first.
kind_node_names() {
    local i
    echo "$KIND_CLUSTER_NAME-control-plane"
    for ((i = 1; i <= kind_workers; i++)); do
        if [ "$i" = 1 ]; then echo "$KIND_CLUSTER_NAME-worker"; else echo "$KIND_CLUSTER_NAME-worker$i"; fi
    done
}

# Private podman configuration: never the host's default store.
podman_dir="$kind_cache/podman"
podman_runroot="/run/nodemedic-kind/podman"

kind_log() { echo "kind-tier: $*" >&2; }

# kind_provider: docker when a Docker engine answers, else podman.
kind_provider() {
    case "${NODEMEDIC_KIND_PROVIDER:-}" in
        docker | podman)
            echo "$NODEMEDIC_KIND_PROVIDER"
            return
            ;;
        "") ;;
        *) kind_die "NODEMEDIC_KIND_PROVIDER must be docker or podman (got '$NODEMEDIC_KIND_PROVIDER')" ;;
    esac
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        echo docker
    else
        echo podman
    fi
}

# Exports what kind, podman and kubectl need for the given provider.
kind_setup_env() {
    local provider="$1"
    export PATH="$kind_cache/bin:$envtest_dir:$PATH"
    export KIND_CLUSTER_NAME
    export KIND_EXPERIMENTAL_PROVIDER="$provider"
    if [ "$provider" = podman ]; then
        # the shim dir comes first: it hides the host's missing /lib/modules from kind
        export PATH="$(kind_shim_dir):$PATH"
        kind_write_podman_conf
        export KIND_EXPERIMENTAL_PODMAN_NETWORK="$kind_network"
    else
        export KIND_EXPERIMENTAL_DOCKER_NETWORK="$kind_network"
    fi
}

# Whether IMAGE is this tier's locally built node image (provision.sh): it
# carries a static bridge CNI config instead of kindnetd, so `up` routes
# pods across nodes itself. Docker runs it too once loaded into the engine
# (tests/kind/docker-engine.sh); kindest/node brings kindnetd.
kind_image_is_local() {
    [ -s "$kind_cache/node-image.ref" ] && [ "$1" = "$(cat "$kind_cache/node-image.ref")" ]
}

# Whether a cluster of PROVIDER runs the static bridge CNI (routed by
# `cluster.sh up`) rather than kindnetd: always under podman, and under
# Docker with this tier's own node image.
kind_static_cni() { [ "$1" = podman ] || kind_image_is_local "$(kind_node_image "$1")"; }

# The node image: built here for podman; the public image for Docker.
kind_node_image() {
    local provider="$1"
    if [ -n "${KIND_NODE_IMAGE:-}" ]; then
        echo "$KIND_NODE_IMAGE"
    elif [ "$provider" = docker ]; then
        # kind v0.33.0's published image for Kubernetes 1.36 (its release notes)
        echo "kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed"
    else
        [ -s "$kind_cache/node-image.ref" ] ||
            kind_die "no local node image yet: run tests/kind/provision.sh first"
        cat "$kind_cache/node-image.ref"
    fi
}

# as_root CMD...: run CMD as root (directly, or through passwordless sudo on
# hosted CI runners); fails when neither is possible.
as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 1
    fi
}

kind_state_dir() { echo "$kind_cache/clusters/$KIND_CLUSTER_NAME"; }

# The podman shim's directory, one per checkout: a link shared by every
# checkout would run another checkout's shim.
kind_shim_dir() { echo "$kind_cache/shim/$(printf '%s' "$kind_dir" | cksum | cut -d' ' -f1)"; }

# Writes the private podman configuration (idempotent). Limits from this VM:
# hard RLIMIT_NOFILE 20000, crun refuses cgroup v1 hybrid (runc instead), no
# systemd as PID 1 (cgroupfs, file events), no 10/8 default subnets.
kind_write_podman_conf() {
    local shim
    shim="$(kind_shim_dir)"
    mkdir -p "$podman_dir/networks" "$podman_dir/storage" "$shim" "$kind_cache/empty-lib-modules"
    [ "$(readlink "$shim/podman" 2>/dev/null)" = "$kind_dir/podman-shim.sh" ] ||
        ln -sfn "$kind_dir/podman-shim.sh" "$shim/podman"
    export NODEMEDIC_KIND_EMPTY_MODULES="$kind_cache/empty-lib-modules"
    local conf
    conf="$(
        cat <<CONF
# written by tests/kind (lib.sh): podman for the kind tier only
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[network]
network_backend = "cni"
network_config_dir = "$podman_dir/networks"
cni_plugin_dirs = ["/usr/lib/cni", "/usr/libexec/cni", "/opt/cni/bin"]
default_subnet = "198.19.255.0/24"
default_subnet_pools = [{"base" = "198.19.128.0/17", "size" = 24}]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "/run/nodemedic-kind/podman-events.log"
tmp_dir = "/run/nodemedic-kind/libpod"
static_dir = "$podman_dir/storage/libpod"
volume_path = "$podman_dir/storage/volumes"
CONF
    )"
    [ "$(cat "$podman_dir/containers.conf" 2>/dev/null)" = "$conf" ] || printf '%s\n' "$conf" >"$podman_dir/containers.conf"
    conf="$(
        cat <<CONF
# written by tests/kind (lib.sh): a store of its own, not the host's
[storage]
driver = "overlay"
graphroot = "$podman_dir/storage"
runroot = "$podman_runroot"
CONF
    )"
    [ "$(cat "$podman_dir/storage.conf" 2>/dev/null)" = "$conf" ] || printf '%s\n' "$conf" >"$podman_dir/storage.conf"
    conf='# written by tests/kind (lib.sh): no registry is searched for short names
unqualified-search-registries = []
short-name-mode = "disabled"'
    [ "$(cat "$podman_dir/registries.conf" 2>/dev/null)" = "$conf" ] || printf '%s\n' "$conf" >"$podman_dir/registries.conf"
    export CONTAINERS_CONF="$podman_dir/containers.conf"
    export CONTAINERS_STORAGE_CONF="$podman_dir/storage.conf"
    export CONTAINERS_REGISTRIES_CONF="$podman_dir/registries.conf"
}
