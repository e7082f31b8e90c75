#!/usr/bin/env bash
# Provision the real Kubernetes control-plane binaries used by the
# `nodemedic-tests` harness: kube-apiserver, etcd, kubectl and helm.
#
# - If KUBEBUILDER_ASSETS is set and holds kube-apiserver, etcd and kubectl,
#   nothing is built: that folder is used as is (setup-envtest convention).
# - Otherwise the binaries are built with Go from their Go modules at the
#   pinned versions below (helper modules in tests/envtest/kube and
#   tests/envtest/helm) and cached outside the clone in
#   ${NODEMEDIC_ENVTEST_DIR:-$HOME/.cache/nodemedic/envtest}/<k8s-version>/.
#   A binary is rebuilt only when its stamp (versions + go.mod/go.sum hash +
#   build flags) changes, so a warm run takes seconds.
#
# The last line printed on stdout is always
#   export KUBEBUILDER_ASSETS=<dir>
# so callers can `eval "$(tests/envtest/provision.sh | tail -n1)"`.
#
# Usage: tests/envtest/provision.sh [--print-env] [--without-helm] [--force]
#   --print-env     print only the export line (build quietly if needed)
#   --without-helm  do not build helm
#   --force         rebuild everything
set -euo pipefail

K8S_VERSION=1.36.3
ETCD_VERSION=3.6.8
HELM_VERSION=3.22.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
print_env_only=0
with_helm=1
force=0
for arg in "$@"; do
    case "$arg" in
        --print-env) print_env_only=1 ;;
        --without-helm) with_helm=0 ;;
        --force) force=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "provision.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() {
    if [ "$print_env_only" = 1 ]; then
        echo "provision: $*" >&2
    else
        echo "provision: $*"
    fi
}

have_assets() {
    local dir="$1"
    [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] && [ -x "$dir/kubectl" ]
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
    if have_assets "$KUBEBUILDER_ASSETS"; then
        log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS (nothing built)"
        echo "export KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
        exit 0
    fi
    echo "provision.sh: KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver, etcd or kubectl" >&2
    exit 1
fi

if ! command -v go >/dev/null 2>&1; then
    echo "provision.sh: 'go' is needed to build kube-apiserver/etcd/kubectl/helm (or set KUBEBUILDER_ASSETS to a folder holding them)" >&2
    exit 1
fi

cache_root="${NODEMEDIC_ENVTEST_DIR:-$HOME/.cache/nodemedic/envtest}"
dest="$cache_root/$K8S_VERSION"
mkdir -p "$dest"

# One provisioning at a time per cache folder.
exec 9>"$dest/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

hash_files() {
    cat "$@" | sha256sum | cut -d' ' -f1
}

export CGO_ENABLED=0
# Keep the machine usable while building: one package at a time unless told otherwise.
go_p="${NODEMEDIC_GO_BUILD_P:-1}"

k8s_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*} \
 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=${K8S_VERSION%%.*} \
 -X k8s.io/client-go/pkg/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
 -X k8s.io/client-go/pkg/version.gitTreeState=clean"
etcd_ldflags="-s -w"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"

# build NAME MODULE_DIR PACKAGE LDFLAGS
build() {
    local name="$1" moddir="$2" pkg="$3" ldflags="$4"
    local stamp
    stamp="$(printf '%s\n' "$K8S_VERSION" "$ETCD_VERSION" "$HELM_VERSION" "$pkg" "$ldflags" "$(go env GOVERSION)" \
        "$(hash_files "$moddir/go.mod" "$moddir/go.sum")" | sha256sum | cut -d' ' -f1)"
    if [ "$force" = 0 ] && [ -x "$dest/$name" ] && [ "$(cat "$dest/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        log "$name: cached ($dest/$name)"
        return 0
    fi
    log "$name: building $pkg (this can take several minutes on a cold cache)"
    local start=$SECONDS
    (cd "$moddir" && go build -p "$go_p" -buildvcs=false -trimpath -ldflags "$ldflags" -o "$dest/.$name.tmp" "$pkg") >&2
    mv -f "$dest/.$name.tmp" "$dest/$name"
    echo "$stamp" >"$dest/.$name.stamp"
    log "$name: built in $((SECONDS - start))s"
}

build etcd "$here/kube" go.etcd.io/etcd/server/v3 "$etcd_ldflags"
build kube-apiserver "$here/kube" k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build kubectl "$here/kube" k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
if [ "$with_helm" = 1 ]; then
    build helm "$here/helm" helm.sh/helm/v3/cmd/helm "$helm_ldflags"
fi

if [ "$print_env_only" = 0 ]; then
    "$dest/kube-apiserver" --version 2>/dev/null | sed 's/^/provision: /' || true
    "$dest/etcd" --version 2>/dev/null | head -n1 | sed 's/^/provision: /' || true
fi
echo "export KUBEBUILDER_ASSETS=$dest"
