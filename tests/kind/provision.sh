#!/usr/bin/env bash
# Provision the kind test tier, cached outside the clone in
# ${NODEMEDIC_KIND_CACHE:-$HOME/.cache/nodemedic/kind}. Idempotent: every
# artefact has a stamp (versions, inputs, flags) and is rebuilt only when its
# stamp changes, so a warm run takes seconds.
#
# With a working Docker engine (`docker info`): kind, plus kubectl and helm
# from tests/envtest/provision.sh. The node image is kind's public one.
#
# Without (this machine class and its CI): additionally
#   - host packages via apt (podman, runc, debootstrap, ...) when missing;
#   - a private podman configuration and store (never the host's);
#   - Go builds: containerd/ctr/shim, crictl and CoreDNS (tests/kind/nodetools),
#     kubelet, kubeadm, kube-controller-manager, kube-scheduler, kube-proxy
#     (k8s.io/kubernetes at the pins of tests/envtest/kube, tests/kind/kube);
#     kube-apiserver, etcd and kubectl come from tests/envtest/provision.sh;
#   - the control-plane images kubeadm asks for, as OCI archives
#     (tests/kind/oci-image.sh), and a tiny static pause program;
#   - a Debian rootfs (debootstrap) turned into a kind node image and
#     imported into the private podman store.
#
# The last line printed on stdout is an `export ...` line for eval, as in
# tests/envtest/provision.sh: `eval "$(tests/kind/provision.sh | tail -n1)"`.
#
# Usage: tests/kind/provision.sh [--print-env] [--force]
#   --print-env   accepted for symmetry with tests/envtest/provision.sh:
#                 progress always goes to stderr, stdout has only the export line
#   --force       rebuild everything (Go builds, images, rootfs)
# Environment: NODEMEDIC_KIND_CACHE, NODEMEDIC_KIND_PROVIDER=docker|podman,
#   NODEMEDIC_GO_BUILD_P (Go package parallelism, default 2),
#   NODEMEDIC_DEBIAN_MIRROR (default: the machine's apt source),
#   NODEMEDIC_KIND_SKIP_APT=1 (never call apt-get; fail if something is missing)
set -euo pipefail

# shellcheck source=tests/kind/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force=0
for arg in "$@"; do
    case "$arg" in
        --print-env) ;; # progress always goes to stderr; kept for symmetry with tests/envtest
        --force) force=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) kind_die "provision.sh: unknown argument $arg (see --help)" ;;
    esac
done

t_start=$SECONDS
step_start=$SECONDS
step_cpu=0
cpu_s=0
log() { echo "provision-kind: $*" >&2; }
# cpu_read: cpu_s = CPU seconds (user + system) used by finished child
# processes so far (`times` must run in this shell, not in a subshell)
cpu_read() {
    times >"$kind_cache/.times"
    cpu_s="$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$kind_cache/.times")"
}
step() {
    step_start=$SECONDS
    cpu_read
    step_cpu="$cpu_s"
    log "$*"
}
step_done() {
    cpu_read
    log "$* ($((SECONDS - step_start))s, $((cpu_s - step_cpu)) CPU-s)"
}

provider="$(kind_provider)"
log "provider: $provider (cache $kind_cache)"
mkdir -p "$kind_cache/bin"

# One provisioning at a time per cache.
# the container tools must not inherit the lock (fd 8)
podman() { command podman "$@" 8>&-; }
exec 8>"$kind_cache/.provision.lock"
flock 8

# stamp_ok NAME STAMP FILE...: FILEs exist and NAME's stamp equals STAMP
stamp_ok() {
    local name="$1" stamp="$2" f
    shift 2
    [ "$force" = 0 ] || return 1
    for f in "$@"; do [ -e "$f" ] || return 1; done
    [ "$(cat "$kind_cache/stamps/$name" 2>/dev/null)" = "$stamp" ]
}
stamp_set() {
    mkdir -p "$kind_cache/stamps"
    echo "$2" >"$kind_cache/stamps/$1"
}
hash_of() { sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------------------
# 1. host packages (podman only)
# ---------------------------------------------------------------------------
host_packages=(podman conmon runc fuse-overlayfs uidmap containernetworking-plugins iptables nftables debootstrap jq tmux
    busybox-static) # the static busybox of the smoke test and netcheck.sh images
ensure_host_packages() {
    local missing=() p
    for p in "${host_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    command -v flock >/dev/null 2>&1 || missing+=(util-linux)
    if [ "${#missing[@]}" = 0 ]; then
        log "host packages: present (${host_packages[*]})"
        return
    fi
    if [ "${NODEMEDIC_KIND_SKIP_APT:-0}" = 1 ]; then
        kind_die "missing host packages: ${missing[*]} (install them: apt-get install ${missing[*]})"
    fi
    [ "$(id -u)" = 0 ] || kind_die "missing host packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}"
    step "host packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >"$kind_cache/apt.log" 2>&1; then
        apt-get update >>"$kind_cache/apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends "${missing[@]}" >>"$kind_cache/apt.log" 2>&1 ||
            kind_die "apt-get install ${missing[*]} failed; see $kind_cache/apt.log"
    fi
    step_done "host packages: installed ${missing[*]}"
}

# ---------------------------------------------------------------------------
# Go builds
# ---------------------------------------------------------------------------
command -v go >/dev/null 2>&1 || kind_die "'go' is needed to build kind (and the node image): install Go 1.25 or later"
export CGO_ENABLED=0
go_p="${NODEMEDIC_GO_BUILD_P:-2}"
go_version="$(go env GOVERSION)"
gobin="$kind_cache/go-bin" # binaries that go into the node image
mkdir -p "$gobin"

k8s_minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
# Same flags as tests/envtest/provision.sh, so compiled packages are shared.
k8s_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*} \
 -X k8s.io/component-base/version.gitMinor=$k8s_minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=${K8S_VERSION%%.*} \
 -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor \
 -X k8s.io/client-go/pkg/version.gitTreeState=clean"

# go_install NAME OUTDIR LDFLAGS TAGS PKG@VERSION...: go install into OUTDIR
go_install() {
    local name="$1" outdir="$2" ldflags="$3" tags="$4"
    shift 4
    local stamp bins=() p
    for p in "$@"; do
        p="${p%@*}"
        bins+=("$outdir/${p##*/}")
    done
    stamp="$(printf '%s\n' "$@" "$ldflags" "$tags" "$go_version" | hash_of)"
    if stamp_ok "$name" "$stamp" "${bins[@]}"; then
        log "$name: cached"
        return
    fi
    step "$name: building $* (minutes on a cold Go cache)"
    GOBIN="$outdir" nice go install -p "$go_p" -trimpath -buildvcs=false -tags "$tags" -ldflags "$ldflags" "$@" >&2
    stamp_set "$name" "$stamp"
    step_done "$name: built"
}

# go_build NAME MODDIR LDFLAGS TAGS PKG...: one go build in a helper module,
# into $gobin (packages shared by the commands compile once)
go_build() {
    local name="$1" moddir="$2" ldflags="$3" tags="$4"
    shift 4
    local stamp bins=() p
    for p in "$@"; do bins+=("$gobin/${p##*/}"); done
    stamp="$( (printf '%s\n' "$@" "$ldflags" "$tags" "$go_version" && cat "$moddir"/go.mod "$moddir"/go.sum &&
        find "$moddir" -name '*.go' -print0 | LC_ALL=C sort -z | xargs -0 cat) | hash_of)"
    if stamp_ok "$name" "$stamp" "${bins[@]}"; then
        log "$name: cached"
        return
    fi
    step "$name: building ${*##*/} (minutes on a cold Go cache)"
    (cd "$moddir" && nice go build -p "$go_p" -trimpath -buildvcs=false -tags "$tags" -ldflags "$ldflags" -o "$gobin/" "$@") >&2
    stamp_set "$name" "$stamp"
    step_done "$name: built"
}

# tests/kind/kube must pin exactly what tests/envtest/kube pins.
check_kube_module() {
    local envmod="$repo_dir/tests/envtest/kube/go.mod" kindmod="$kind_dir/kube/go.mod" line drift=0
    while IFS= read -r line; do
        grep -qxF -- "$line" "$kindmod" || {
            echo "  missing in tests/kind/kube/go.mod: $line" >&2
            drift=1
        }
    done < <(grep -E '^[[:space:]]+[^/[:space:]].* v[0-9]' "$envmod" | grep -v '// indirect$' || true)
    while IFS= read -r line; do
        grep -qxF -- "$line" "$kindmod" || {
            echo "  missing in tests/kind/kube/go.mod: $line" >&2
            drift=1
        }
    done < <(grep -E '=>' "$envmod")
    [ "$drift" = 0 ] || kind_die "tests/kind/kube/go.mod drifted from tests/envtest/kube/go.mod: copy its require/replace lines, keep tools.go, run 'go mod tidy' in tests/kind/kube"
}

# ---------------------------------------------------------------------------
# kind itself (both providers)
# ---------------------------------------------------------------------------
go_install kind "$kind_cache/bin" "-s -w" "" "sigs.k8s.io/kind@$KIND_VERSION"
kind_src="$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION"
if [ ! -d "$kind_src/images/base/files" ]; then
    (cd / && go mod download "sigs.k8s.io/kind@$KIND_VERSION") >&2
fi

# kubectl (and helm when tests/envtest/provision.sh built it); with podman also
# kube-apiserver and etcd for the node image, from the envtest provisioning.
link_clients() {
    local b
    for b in kubectl helm; do
        if [ -x "$envtest_dir/$b" ]; then
            ln -sfn "$envtest_dir/$b" "$kind_cache/bin/$b"
        fi
    done
}
if [ "$provider" = podman ]; then
    step "envtest binaries (tests/envtest/provision.sh --without-helm)"
    "$repo_dir/tests/envtest/provision.sh" --print-env --without-helm >/dev/null
    step_done "envtest binaries: $envtest_dir"
    link_clients
elif [ -x "$envtest_dir/kubectl" ]; then
    link_clients
else
    check_kube_module
    go_build kubectl "$kind_dir/kube" "$k8s_ldflags" "" k8s.io/kubernetes/cmd/kubectl
    ln -sfn "$gobin/kubectl" "$kind_cache/bin/kubectl"
    link_clients
fi

print_env() {
    local extra=""
    if [ "$provider" = podman ]; then
        extra=" CONTAINERS_CONF=$podman_dir/containers.conf CONTAINERS_STORAGE_CONF=$podman_dir/storage.conf CONTAINERS_REGISTRIES_CONF=$podman_dir/registries.conf"
    fi
    cpu_read
    log "done in $((SECONDS - t_start))s ($cpu_s CPU-s in child processes)"
    echo "export PATH=$(kind_shim_dir):$kind_cache/bin:$envtest_dir:\$PATH KIND_EXPERIMENTAL_PROVIDER=$provider$extra"
}

if [ "$provider" = docker ]; then
    print_env
    exit 0
fi

# ---------------------------------------------------------------------------
# podman: packages, private config, node binaries, images, node image
# ---------------------------------------------------------------------------
ensure_host_packages
kind_write_podman_conf

# ---- the node's Debian root filesystem (debootstrap, cached as a tarball) ----
# Started in the background before the Go builds: it mostly waits on the
# Debian mirror, and the Go builds on the CPU.
node_packages="systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,fuse-overlayfs,e2fsprogs,bash,ca-certificates,curl,jq,procps,runc,containernetworking-plugins"
debian_mirror() {
    if [ -n "${NODEMEDIC_DEBIAN_MIRROR:-}" ]; then
        echo "$NODEMEDIC_DEBIAN_MIRROR"
        return
    fi
    local m
    m="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\/\{0,1\}\)$/\1/p' | head -n1)"
    [ -n "$m" ] || m="$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\/debian\/\{0,1\}\)[[:space:]].*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n1)"
    echo "${m:-http://deb.debian.org/debian}"
}
# umount_under DIR: unmount whatever an interrupted chroot/debootstrap left
# mounted below DIR (deepest first), so removing DIR never reaches /proc or /sys.
umount_under() {
    local dir mnt
    dir="$(realpath -m "$1")"
    awk '{print $2}' /proc/mounts | { grep -E "^$dir(/|$)" || true; } | sort -r | while IFS= read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done
}
mirror="$(debian_mirror)"
rootfs_stamp="$(printf '%s\n' "$NODE_DEBIAN_SUITE" "$node_packages" "$mirror" minbase v1 | hash_of)"
rootfs_tar="$kind_cache/rootfs/$NODE_DEBIAN_SUITE-minbase.tar"
build_rootfs() {
    local t=$SECONDS r="$kind_cache/rootfs/build"
    umount_under "$kind_cache/rootfs"
    rm -rf --one-file-system "$kind_cache/rootfs"
    mkdir -p "$r"
    if ! debootstrap --variant=minbase --include="$node_packages" "$NODE_DEBIAN_SUITE" \
        "$r" "$mirror" >"$kind_cache/debootstrap.log" 2>&1; then
        umount_under "$r"
        tail -n 20 "$kind_cache/debootstrap.log" >&2
        echo "provision-kind: ERROR: debootstrap failed (log: $kind_cache/debootstrap.log); set NODEMEDIC_DEBIAN_MIRROR to a reachable Debian mirror" >&2
        return 1
    fi
    chroot "$r" apt-get clean
    umount_under "$r"
    rm -rf --one-file-system "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/usr/share/doc/* "$r"/usr/share/man/* \
        "$r"/usr/share/info/* "$r"/var/log/* "$r"/tmp/* "$r"/var/tmp/*
    tar -C "$r" --numeric-owner --xattrs -cf "$rootfs_tar.tmp" .
    mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf --one-file-system "$r"
    stamp_set rootfs "$rootfs_stamp"
    log "node rootfs: debootstrap done, $(du -h "$rootfs_tar" | cut -f1) ($((SECONDS - t))s)"
}
rootfs_pid=""
if ! stamp_ok rootfs "$rootfs_stamp" "$rootfs_tar"; then
    [ "$(id -u)" = 0 ] || kind_die "building the node rootfs (debootstrap, chroot) needs root"
    log "node rootfs: debootstrap $NODE_DEBIAN_SUITE minbase from $mirror, in the background (log: $kind_cache/debootstrap.log)"
    build_rootfs &
    rootfs_pid=$!
    trap '[ -z "$rootfs_pid" ] || kill "$rootfs_pid" 2>/dev/null || true' EXIT
else
    log "node rootfs: cached ($rootfs_tar)"
fi

check_kube_module
go_build kubernetes "$kind_dir/kube" "$k8s_ldflags" "" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kube-proxy
# containerd (the version kind v0.33.0's base image ships), crictl and CoreDNS
# in one build (tests/kind/nodetools pins them)
go_build nodetools "$kind_dir/nodetools" "-s -w \
 -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION \
 -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION \
 -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
    "no_btrfs no_devmapper no_zfs no_aufs" \
    github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 sigs.k8s.io/cri-tools/cmd/crictl \
    nodemedic.io/kind/nodetools/coredns

# The sandbox ("pause") program: sleep, reap children, exit on SIGTERM/SIGINT.
pause_src='#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int sig) { (void)sig; _exit(0); }
static void on_chld(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, 0);
    sigaction(SIGINT, &sa, 0);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, 0);
    for (;;) pause();
}'
pause_stamp="$(printf '%s\n' "$pause_src" "$(cc --version | head -n1)" | hash_of)"
if ! stamp_ok pause "$pause_stamp" "$gobin/pause"; then
    printf '%s\n' "$pause_src" >"$gobin/pause.c"
    cc -static -Os -s -o "$gobin/pause" "$gobin/pause.c"
    stamp_set pause "$pause_stamp"
    log "pause: built"
fi


if [ -n "$rootfs_pid" ]; then
    step "node rootfs: waiting for debootstrap"
    wait "$rootfs_pid" || kind_die "building the node rootfs failed (see above)"
    rootfs_pid=""
    step_done "node rootfs: ready"
fi

# ---- control-plane images (OCI archives) ----
images_dir="$kind_cache/images"
mkdir -p "$images_dir"
oci="$kind_dir/oci-image.sh"
step "control-plane images"
image_lines=()
image() { # FILE REF ARGS...
    local file="$1" ref="$2"
    shift 2
    "$oci" --name "$ref" --output "$images_dir/$file" "$@" >/dev/null
    image_lines+=("$file $ref")
}
for c in kube-apiserver kube-controller-manager kube-scheduler; do
    src="$gobin/$c"
    [ "$c" = kube-apiserver ] && src="$envtest_dir/kube-apiserver"
    image "$c.tar" "registry.k8s.io/$c:v$K8S_VERSION" "$src=/usr/local/bin/$c:0755" --dir /tmp:1777
done
image etcd.tar "registry.k8s.io/etcd:$ETCD_IMAGE_TAG" "$envtest_dir/etcd=/usr/local/bin/etcd:0755" --dir /tmp:1777 --dir /var/lib/etcd:0700
image pause.tar "registry.k8s.io/pause:$PAUSE_IMAGE_TAG" "$gobin/pause=/pause:0755" --entrypoint /pause --user 65535:65535
image coredns.tar "$COREDNS_IMAGE" "$gobin/coredns=/coredns:0755" --entrypoint /coredns --dir /tmp:1777

# kube-proxy needs iptables: the iptables packages' files from the node rootfs
# (same Debian release), with iptables pointing at the nft backend.
proxy_tree="$kind_cache/kube-proxy-tree"
proxy_stamp="$(printf '%s\n' "$rootfs_stamp" v1 | hash_of)"
if ! stamp_ok kube-proxy-tree "$proxy_stamp" "$proxy_tree/usr/sbin/xtables-nft-multi"; then
    rm -rf "$proxy_tree" "$proxy_tree.x"
    mkdir -p "$proxy_tree.x"
    tar -C "$proxy_tree.x" -xf "$rootfs_tar" ./var/lib/dpkg/info ./usr ./lib ./lib64 ./etc/ethertypes 2>/dev/null ||
        tar -C "$proxy_tree.x" -xf "$rootfs_tar"
    mkdir -p "$proxy_tree"
    # usrmerge: /lib, /lib64, /bin, /sbin are links into /usr
    for d in lib lib64 bin sbin; do
        if [ -L "$proxy_tree.x/$d" ]; then
            cp -a "$proxy_tree.x/$d" "$proxy_tree/$d"
            mkdir -p "$proxy_tree/$(readlink "$proxy_tree.x/$d")"
        fi
    done
    for pkg in iptables libxtables12 libip4tc2 libip6tc2 libnftnl11 libmnl0 libnetfilter-conntrack3 libnfnetlink0 libc6; do
        list=""
        for l in "$proxy_tree.x/var/lib/dpkg/info/$pkg.list" "$proxy_tree.x/var/lib/dpkg/info/$pkg":*.list; do
            [ -f "$l" ] && list="$l" && break
        done
        [ -n "$list" ] || kind_die "kube-proxy image: package $pkg not found in the node rootfs"
        grep -vE '^/usr/share/(doc|man|locale|lintian|info)|^/\.$' "$list" | while IFS= read -r f; do
            if { [ -L "$proxy_tree.x$f" ] && [ ! -d "$proxy_tree.x$f" ]; } || [ -f "$proxy_tree.x$f" ]; then
                mkdir -p "$proxy_tree$(dirname "$f")"
                cp -a "$proxy_tree.x$f" "$proxy_tree$f"
            fi
        done
    done
    for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -sfn xtables-nft-multi "$proxy_tree/usr/sbin/$t"
    done
    rm -rf "$proxy_tree.x"
    stamp_set kube-proxy-tree "$proxy_stamp"
fi
image kube-proxy.tar "registry.k8s.io/kube-proxy:v$K8S_VERSION" "$gobin/kube-proxy=/usr/local/bin/kube-proxy:0755" \
    --tree "$proxy_tree=/" --dir /tmp:1777 --dir /run:0755 --dir /var/lib/kube-proxy:0755
step_done "control-plane images: ${#image_lines[@]} in $images_dir"

# ---- the node image ----
node_files="$kind_dir/node"
key_inputs() {
    printf '%s\n' "$rootfs_stamp" "$kind_pod_subnet" "$KIND_VERSION" "$K8S_VERSION"
    cat "$kind_cache/stamps/nodetools" "$kind_cache/stamps/kubernetes" "$envtest_dir/.kubectl.stamp"
    cat "$images_dir"/*.tar.key
    (cd "$kind_src/images/base/files" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    (cd "$node_files" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    sed -n '/^# ---- the node image ----$/,$p' "${BASH_SOURCE[0]}"
}
node_key="$(key_inputs | hash_of)"
node_ref="localhost/nodemedic/kind-node:v$K8S_VERSION-${node_key:0:12}"
if [ "$force" = 0 ] && [ "$(cat "$kind_cache/node-image.ref" 2>/dev/null)" = "$node_ref" ] &&
    podman image exists "$node_ref" 2>/dev/null; then
    log "node image: cached ($node_ref)"
    print_env
    exit 0
fi

step "node image: assembling $node_ref"
nb="$kind_cache/node-build"
umount_under "$nb"
rm -rf --one-file-system "$nb"
mkdir -p "$nb"
tar -C "$nb" --numeric-owner --xattrs -xf "$rootfs_tar"
kf="$kind_src/images/base/files"
# kind's images/base files, laid in as its Dockerfile does
install -m 0755 "$kf"/usr/local/bin/* "$nb/usr/local/bin/"
mkdir -p "$nb/kind/bin" "$nb/LICENSES" "$nb/etc/containerd" "$nb/etc/default" "$nb/etc/sysctl.d" \
    "$nb/etc/systemd/system/kubelet.service.d"
cp -r "$kf/kind/." "$nb/kind/"
find "$nb/kind" -type f -exec chmod 0644 {} +
chmod 0755 "$nb/kind" "$nb/kind/bin" "$nb"/kind/bin/*
install -m 0644 "$kf"/LICENSES/* "$nb/LICENSES/"
find "$kf/etc" -maxdepth 1 -type f -exec install -m 0644 {} "$nb/etc/" \;
install -m 0644 "$kf"/etc/containerd/* "$nb/etc/containerd/"
install -m 0644 "$kf"/etc/default/* "$nb/etc/default/"
install -m 0644 "$kf"/etc/sysctl.d/* "$nb/etc/sysctl.d/"
find "$kf/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$nb/etc/systemd/system/" \;
install -m 0644 "$kf"/etc/systemd/system/kubelet.service.d/* "$nb/etc/systemd/system/kubelet.service.d/"

# binaries
install -m 0755 "$gobin/containerd" "$gobin/ctr" "$gobin/containerd-shim-runc-v2" "$gobin/crictl" "$nb/usr/local/bin/"
install -m 0755 "$gobin/kubelet" "$gobin/kubeadm" "$envtest_dir/kubectl" "$nb/usr/bin/"
mkdir -p "$nb/opt/cni/bin"
for p in "$nb"/usr/lib/cni/*; do ln -sfn "/usr/lib/cni/${p##*/}" "$nb/opt/cni/bin/${p##*/}"; done

# containerd: base OCI spec without rlimits (hard limits here are low) and
# with kind's product-files hook; OOM scores capped (no CAP_SYS_RESOURCE in
# this VM); the locally imported pause image as sandbox.
"$gobin/ctr" oci spec |
    chroot "$nb" jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"} | del(.process.rlimits)' \
        >"$nb/etc/containerd/cri-base.json"
sed -i -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' \
    -e "s#sandbox_image = \".*\"#sandbox_image = \"registry.k8s.io/pause:$PAUSE_IMAGE_TAG\"#" \
    "$nb/etc/containerd/config.toml"
grep -q 'restrict_oom_score_adj = true' "$nb/etc/containerd/config.toml" || kind_die "could not set restrict_oom_score_adj in kind's containerd config"
sed -i -e '/^OOMScoreAdjust=/d' -e '/^LimitNOFILE=/d' -e '/^LimitNPROC=/d' "$nb/etc/systemd/system/containerd.service"

# static CNI (kindnetd is not on the Go module proxy): one bridge for one node
mkdir -p "$nb/etc/cni/net.d"
sed "s#@POD_SUBNET@#$kind_pod_subnet#" "$node_files/10-nodemedic-bridge.conflist" >"$nb/etc/cni/net.d/10-nodemedic-bridge.conflist"

# control-plane images, imported into containerd at boot before kubelet starts
mkdir -p "$nb/kind/nodemedic-images"
for line in "${image_lines[@]}"; do
    cp "$images_dir/${line%% *}" "$nb/kind/nodemedic-images/"
done
printf '%s\n' "${image_lines[@]}" >"$nb/kind/nodemedic-images/images.txt"
install -m 0755 "$node_files/import-images.sh" "$nb/kind/bin/nodemedic-import-images.sh"
install -m 0644 "$node_files/nodemedic-images.service" "$nb/etc/systemd/system/"
install -m 0644 "$node_files/20-nodemedic-images.conf" "$nb/etc/systemd/system/kubelet.service.d/"

# sysctl.d files whose keys are not namespaced: the node's systemd-sysctl would
# set them on the host (fs.protected_*, kernel.pid_max)
rm -f "$nb/usr/lib/sysctl.d/99-protect-links.conf" "$nb/usr/lib/sysctl.d/50-pid-max.conf"

# service setup, as kind's Dockerfile does
find "$nb/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
rm -f "$nb"/lib/systemd/system/multi-user.target.wants/* "$nb"/etc/systemd/system/*.wants/* \
    "$nb"/lib/systemd/system/local-fs.target.wants/* "$nb"/lib/systemd/system/sockets.target.wants/*udev* \
    "$nb"/lib/systemd/system/sockets.target.wants/*initctl* "$nb"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$nb/etc/systemd/journald.conf"
[ -e "$nb/sbin/init" ] || ln -s /usr/lib/systemd/systemd "$nb/sbin/init"
chroot "$nb" systemctl enable kubelet.service containerd.service undo-mount-hacks.service nodemedic-images.service >/dev/null 2>&1
chroot "$nb" systemctl mask systemd-binfmt.service >/dev/null 2>&1
mkdir -p "$nb/etc/kubernetes/manifests"
echo "v$K8S_VERSION" >"$nb/kind/version"
: >"$nb/etc/machine-id"

# import into the private podman store; drop older node images
podman_image_tmp="$kind_cache/node-image.tar"
tar -C "$nb" --numeric-owner --xattrs -cf "$podman_image_tmp" .
rm -rf --one-file-system "$nb"
podman import \
    --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'ENV container=docker' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL io.nodemedic.kind.pod-subnet=$kind_pod_subnet" \
    "$podman_image_tmp" "$node_ref" >/dev/null
rm -f "$podman_image_tmp"
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/nodemedic/kind-node:' | grep -vxF "$node_ref" || true); do
    podman rmi "$old" >/dev/null 2>&1 || true
done
echo "$node_ref" >"$kind_cache/node-image.ref"
step_done "node image: $node_ref"
print_env
