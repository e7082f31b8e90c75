#!/usr/bin/env bash
# End-to-end checks of the nodemedic API in a real cluster: by default a
# throw-away kind cluster made by tests/kind/cluster.sh (podman and a node
# image built by tests/kind/provision.sh here; Docker and kindest/node where
# a Docker engine answers).
#
#   tests/kind/e2e.sh                 # cluster up, run, cluster down
#   KEEP_CLUSTER=1 tests/kind/e2e.sh  # leave the cluster running
#                                     # (later: tests/kind/cluster.sh down)
#   tests/kind/e2e.sh --use-current-context
#                                     # no kind: use the cluster $KUBECONFIG
#                                     # points at (e.g. one started by
#                                     # `cargo run -p nodemedic-tests --bin nodemedic-control-plane`)
#
# What it checks:
#   1. the CRDs from crds/yaml apply and become Established;
#   2. every examples/*.yaml applies (kubectl apply -f);
#   3. every examples/invalid/*.yaml is rejected with each of its
#      `# expect-error:` messages;
#   4. if helm is available: the chart in charts/nodemedic renders and the
#      API server accepts the rendered objects (server-side dry run).
#
# Environment: KIND_CLUSTER_NAME (default nodemedic-e2e), KIND_NODE_IMAGE
# (Docker: another kindest/node image), KEEP_CLUSTER=1, KUBECTL, HELM.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="${KIND_CLUSTER_NAME:-nodemedic-e2e}"
kubectl="${KUBECTL:-kubectl}"
helm="${HELM:-helm}"
use_current=0
for arg in "$@"; do
    case "$arg" in
        --use-current-context) use_current=1 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "e2e.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "e2e.sh: '$1' not found on PATH ($2)" >&2; exit 2; }
}

passed=0
failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

if [ "$use_current" = 0 ]; then
    export KIND_CLUSTER_NAME="$cluster"
    cleanup() {
        if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
            echo "keeping kind cluster $cluster (eval \"\$(tests/kind/cluster.sh env)\"; tests/kind/cluster.sh down)"
        else
            "$repo/tests/kind/cluster.sh" down || true
        fi
    }
    trap cleanup EXIT
    "$repo/tests/kind/cluster.sh" up >/dev/null
    eval "$("$repo/tests/kind/cluster.sh" env)"
fi
need "$kubectl" "install kubectl, or run tests/envtest/provision.sh and put \$KUBEBUILDER_ASSETS on PATH"

k() { "$kubectl" "$@"; }

echo "== cluster: $(k config current-context 2>/dev/null || echo '?') $(k version -o json 2>/dev/null | grep -m1 gitVersion | tr -d ' ",' || true)"

# 1. CRDs
if k apply --server-side --force-conflicts --field-manager=nodemedic-e2e -f "$repo/crds/yaml/" >/dev/null &&
    k wait --for=condition=Established --timeout=60s \
        crd/nodehealthpolicies.nodemedic.io crd/nodehealthreports.nodemedic.io >/dev/null; then
    ok "CRDs applied and Established"
else
    fail "CRDs applied and Established"
fi
for res in nhp nhr; do
    if k get "$res" >/dev/null 2>&1; then ok "kubectl get $res"; else fail "kubectl get $res"; fi
done

# 2. valid examples
for f in "$repo"/examples/*.yaml; do
    if out=$(k apply -f "$f" 2>&1); then
        ok "apply $(basename "$f")"
    else
        fail "apply $(basename "$f"): $out"
    fi
done

# 3. invalid examples
for f in "$repo"/examples/invalid/*.yaml; do
    name=$(basename "$f")
    mapfile -t expected < <(sed -n 's/^[[:space:]]*# expect-error:[[:space:]]*//p' "$f")
    if [ "${#expected[@]}" = 0 ]; then
        fail "$name has no '# expect-error:' line"
        continue
    fi
    if out=$(k apply -f "$f" 2>&1); then
        fail "$name was accepted"
        k delete -f "$f" --ignore-not-found >/dev/null 2>&1 || true
        continue
    fi
    missing=""
    for msg in "${expected[@]}"; do
        case "$out" in
            *"$msg"*) ;;
            *) missing="$missing [$msg]" ;;
        esac
    done
    if [ -z "$missing" ]; then ok "rejected $name"; else fail "rejected $name without$missing: $out"; fi
done

# 4. chart (optional)
if [ -f "$repo/charts/nodemedic/Chart.yaml" ] && [ -d "$repo/charts/nodemedic/templates" ] &&
    command -v "$helm" >/dev/null 2>&1; then
    k create namespace nodemedic-system --dry-run=client -o yaml | k apply -f - >/dev/null
    if rendered=$("$helm" template nodemedic "$repo/charts/nodemedic" --namespace nodemedic-system 2>&1) &&
        printf '%s\n' "$rendered" | k apply --dry-run=server -n nodemedic-system -f - >/dev/null 2>&1; then
        ok "chart renders and passes server-side dry run"
    else
        fail "chart renders and passes server-side dry run"
    fi
else
    echo "skip chart (no charts/nodemedic/templates or no helm)"
fi

# clean up what we created (CRDs stay: a kind cluster is thrown away anyway)
k delete -f "$repo/examples/" --ignore-not-found >/dev/null 2>&1 || true

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
