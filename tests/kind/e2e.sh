#!/usr/bin/env bash
# End-to-end test of nodemedic in a real cluster: a throw-away kind cluster
# made by tests/kind/cluster.sh (podman and a node image built by
# tests/kind/provision.sh here; Docker and kindest/node where a Docker engine
# answers), where a real kubelet runs real pods.
#
#   tests/kind/e2e.sh                 # images, cluster up, run, cluster down
#   KEEP_CLUSTER=1 tests/kind/e2e.sh  # leave the cluster running
#                                     # (later: tests/kind/cluster.sh down)
#
# What it proves:
#   1. `helm install` of charts/nodemedic with locally built images
#      (tests/kind/images.sh: static binaries, no registry, pull policy
#      Never): the agent DaemonSet and the two operator replicas become Ready;
#   2. the API: every examples/*.yaml applies, every examples/invalid/*.yaml
#      is rejected with each of its `# expect-error:` messages;
#   3. a workload pod whose init hosts a zombie factory (the project's problem
#      generator, in a test image) is detected, and the finding is attributed
#      to that pod by namespace and name;
#   4. a DryRun policy plans (Planned in the policy's status) and changes
#      nothing: no action request, the zombie parent untouched;
#   5. switched to Enforce, the operator asks the agent to SIGKILL the zombie
#      parent, the agent does, the pod's init reaps the zombies, and the
#      report says so; the pod keeps running;
#   5b. `kubectl nodemedic explain` of the node, run in a terminal (tmux) as a
#      person would, names the pod, the SignalParent step and its outcome;
#   6. the agent's RBAC and admission limits hold inside the cluster, with a
#      token bound to the running agent pod;
#   6b. trust boundaries: a report spec write by anyone but the operator (a
#      cluster admin here) is denied by the admission policy; a pod with the
#      agent pod's privileges (hostPID, uid 0, KILL only) reads another pod's
#      process stat but not the operator's token through /proc/PID/root; a
#      forged SIGKILL request written with a stolen operator token against a
#      process with no zombies is refused by the real agent
#      (NotAZombieParent) and the process lives on;
#   7. `helm uninstall` leaves none of the release's objects behind.
#
# Environment: KIND_CLUSTER_NAME (default nodemedic-e2e), KIND_NODE_IMAGE
# (Docker: another kindest/node image), KEEP_CLUSTER=1,
# NODEMEDIC_REQUIRE_REAL_HOST=1 (a machine that cannot run kind fails instead
# of skipping; CI sets it).
# `ok` and `fail` always succeed, so `A && ok || fail` is an if-then-else here.
# shellcheck disable=SC2015
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-nodemedic-e2e}"
ns=nodemedic-system
release=nodemedic
tag=e2e

case "${1:-}" in
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    "") ;;
    *) echo "e2e.sh: unknown argument $1" >&2; exit 2 ;;
esac

skip_or_fail() {
    if [ "${NODEMEDIC_REQUIRE_REAL_HOST:-0}" = 1 ]; then
        echo "e2e.sh: FAIL: cannot run the kind tier here: $*" >&2
        exit 1
    fi
    echo "!!! e2e.sh: SKIPPING the kind tier: $* !!!" >&2
    exit 0
}
if ! docker info >/dev/null 2>&1 && [ "$(id -u)" != 0 ]; then
    skip_or_fail "podman mode needs root (and no Docker engine answers)"
fi

passed=0
failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

# Polls CMD every second until it succeeds or TIMEOUT seconds pass.
wait_for() {
    local what=$1 timeout=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail "$what (not within ${timeout}s)"
            return 1
        fi
        sleep 1
    done
    ok "$what"
}

step "provision"
"$repo/tests/envtest/provision.sh" >/dev/null
"$repo/tests/kind/provision.sh" >/dev/null

step "images (static binaries, OCI archives)"
images_out="$(mktemp -d)"
"$repo/tests/kind/images.sh" --tag "$tag" --with-workload --out "$images_out"

step "cluster"
diagnose() {
    echo "--- diagnostics ---"
    kubectl get pods -A -o wide 2>&1 | head -40 || true
    kubectl -n "$ns" logs -l app.kubernetes.io/component=agent --tail=40 2>&1 || true
    kubectl -n "$ns" logs -l app.kubernetes.io/component=operator --tail=60 --prefix 2>&1 || true
    kubectl get nhr -o yaml 2>&1 | head -120 || true
    kubectl get nhp -o yaml 2>&1 | sed -n '/^  status:/,$p' | head -80 || true
}
cleanup() {
    local rc=$?
    if [ "$failed" != 0 ] || [ "$rc" != 0 ]; then diagnose; fi
    [ -z "${session:-}" ] || tmux kill-session -t "$session" 2>/dev/null || true
    rm -rf "$images_out"
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
        echo "keeping kind cluster $KIND_CLUSTER_NAME (eval \"\$(tests/kind/cluster.sh env)\"; tests/kind/cluster.sh down)"
    else
        "$repo/tests/kind/cluster.sh" down || true
    fi
}
trap cleanup EXIT
"$repo/tests/kind/cluster.sh" up >/dev/null
eval "$("$repo/tests/kind/cluster.sh" env)"
"$repo/tests/kind/cluster.sh" load "$images_out/nodemedic.tar" "$images_out/nodemedic-workload.tar"
node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
kv=$(kubectl version -o json | jq -r .serverVersion.gitVersion)
echo "node $node, Kubernetes $kv"

# ---------------------------------------------------------------------------
step "1. helm install"
if helm install "$release" "$repo/charts/nodemedic" -n "$ns" --create-namespace \
    --set image.repository=localhost/nodemedic --set image.tag="$tag" \
    --set image.pullPolicy=Never \
    --set agent.interval=2s --set agent.heartbeat=30s \
    --set operator.leaderElection.leaseDuration=8s \
    --wait --timeout 5m >/dev/null; then
    ok "helm install (agent DaemonSet and operator Deployment Ready)"
else
    fail "helm install"
    exit 1
fi
# helm's --wait accepts a DaemonSet within its maxUnavailable: wait for the pod.
ds=$(kubectl -n "$ns" get ds -l app.kubernetes.io/component=agent -o name)
wait_for "the agent pod is Ready (first scan done, first report written)" 90 \
    kubectl -n "$ns" rollout status "$ds" --timeout=5s
ready_ops=$(kubectl -n "$ns" get deploy -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].status.readyReplicas}')
[ "$ready_ops" = 2 ] && ok "operator replicas Ready: $ready_ops" || fail "operator replicas Ready: $ready_ops"
agent_pod=$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=agent -o jsonpath='{.items[0].metadata.name}')
agent_sa=$(kubectl -n "$ns" get pod "$agent_pod" -o jsonpath='{.spec.serviceAccountName}')
privileged=$(kubectl -n "$ns" get pod "$agent_pod" -o jsonpath='{.spec.containers[0].securityContext.privileged}')
caps=$(kubectl -n "$ns" get pod "$agent_pod" -o jsonpath='{.spec.containers[0].securityContext.capabilities.add}')
if [ "$privileged" != true ] && [ "$caps" = '["KILL"]' ]; then
    ok "the agent runs unprivileged with KILL only"
else
    fail "agent security context: privileged=$privileged caps=$caps"
fi
wait_for "the agent publishes its node's report" 60 \
    kubectl get nhr "$node" -o jsonpath='{.status.lastScanTime}'

# ---------------------------------------------------------------------------
step "2. the API"
for f in "$repo"/examples/*.yaml; do
    if out=$(kubectl apply -f "$f" 2>&1); then ok "apply $(basename "$f")"; else fail "apply $(basename "$f"): $out"; fi
done
for f in "$repo"/examples/invalid/*.yaml; do
    name=$(basename "$f")
    mapfile -t expected < <(sed -n 's/^[[:space:]]*# expect-error:[[:space:]]*//p' "$f")
    if out=$(kubectl apply -f "$f" 2>&1); then
        fail "$name was accepted"
        kubectl delete -f "$f" --ignore-not-found >/dev/null 2>&1 || true
        continue
    fi
    missing=""
    for msg in "${expected[@]}"; do
        case "$out" in *"$msg"*) ;; *) missing="$missing [$msg]" ;; esac
    done
    [ -z "$missing" ] && ok "rejected $name" || fail "rejected $name without$missing: $out"
done
# The examples select real nodes (some in Enforce): remove them before the scenario.
kubectl delete -f "$repo/examples/" --ignore-not-found --timeout=120s >/dev/null

# ---------------------------------------------------------------------------
step "3. a pod making zombies is detected and named"
kubectl create namespace shop >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: zombie-factory, namespace: shop}
spec:
  terminationGracePeriodSeconds: 2
  containers:
    - name: factory
      image: localhost/nodemedic-workload:$tag
      imagePullPolicy: Never
      args: [zombies, --count, "30"]
EOF
wait_for "the workload pod runs" 60 \
    sh -c "kubectl -n shop get pod zombie-factory -o jsonpath='{.status.phase}' | grep -qx Running"
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: e2e-zombies}
spec:
  mode: DryRun
  detectors:
    zombies: {threshold: 100000, perParentThreshold: 10, minAge: 0s, for: 4s}
  actions:
    zombies:
      - {action: Event}
      - {action: SignalParent, after: 4s, signal: SIGKILL}
  safety:
    maxUnhealthy: 1
    cooldown: 10s
EOF
# The report's zombie finding under the workload pod (null when none).
finding() {
    kubectl get nhr "$node" -o json |
        jq -c '[.status.findings.zombies[]? | select(.parent.workload.podName == "zombie-factory")] | first'
}
has_finding() {
    finding | jq -e \
        '.zombies == 30 and .parent.workload.podNamespace == "shop" and .parent.workload.container == "factory" and .exceeded'
}
wait_for "the zombie parent is reported under shop/zombie-factory, container factory" 60 has_finding
parent_pid=$(finding | jq -r .parent.hostPid)
parent_start=$(finding | jq -r .parent.startTime)
firing() {
    kubectl get nhr "$node" -o json | jq -e \
        '.status.conditions[] | select(.policy == "e2e-zombies" and .type == "ZombiesDetected" and .status == "True")'
}
wait_for "the zombies condition fires after its for" 60 firing

# ---------------------------------------------------------------------------
step "4. DryRun plans and changes nothing"
planned() {
    kubectl get nhp e2e-zombies -o json | jq -e \
        '[.status.recentActions[]? | select(.action == "SignalParent" and .outcome == "Planned")] | length > 0'
}
wait_for "DryRun records a Planned SignalParent" 60 planned
sleep 6
requests=$(kubectl get nhr "$node" -o json | jq '[.spec.actionRequests[]?] | length')
[ "$requests" = 0 ] && ok "no action request in DryRun" || fail "DryRun wrote $requests action requests"
now=$(finding)
if echo "$now" | jq -e --argjson pid "$parent_pid" --argjson st "$parent_start" \
    '.parent.hostPid == $pid and .parent.startTime == $st and .zombies == 30' >/dev/null; then
    ok "the zombie parent is untouched"
else
    fail "the zombie parent changed under DryRun: was $parent_pid/$parent_start, now $now"
fi
unsched=$(kubectl get node "$node" -o jsonpath='{.spec.unschedulable}')
[ -z "$unsched" ] && ok "the node is not cordoned" || fail "the node is cordoned: $unsched"

# ---------------------------------------------------------------------------
step "5. Enforce: the zombie parent is signalled and the zombies are reaped"
kubectl patch nhp e2e-zombies --type merge -p '{"spec":{"mode":"Enforce"}}' >/dev/null
reaped() {
    kubectl get nhr "$node" -o json | jq -e \
        '[.status.actionResults[]? | select(.outcome == "Signalled" and .followUp.reaped == true and .followUp.parentExited == true and .followUp.zombiesBefore == 30)] | length > 0'
}
wait_for "the agent reports the signal delivered and the 30 zombies reaped" 90 reaped
gone() {
    finding | jq -e '. == null or .zombies == 0'
}
wait_for "the next scans show no zombies under the pod" 30 gone
executed() {
    kubectl get nhp e2e-zombies -o json | jq -e \
        '[.status.recentActions[]? | select(.action == "SignalParent" and .outcome == "Executed")] | length > 0'
}
wait_for "the policy's status records the executed action" 30 executed
restarts=$(kubectl -n shop get pod zombie-factory -o jsonpath='{.status.containerStatuses[0].restartCount}')
phase=$(kubectl -n shop get pod zombie-factory -o jsonpath='{.status.phase}')
[ "$phase" = Running ] && [ "$restarts" = 0 ] && ok "the pod keeps running (its init reaped)" ||
    fail "the pod: phase $phase, restarts $restarts"
if kubectl get events -A --field-selector involvedObject.kind=Pod,involvedObject.name=zombie-factory -o json |
    jq -e '[.items[] | select(.reportingComponent // .source.component | tostring | test("nodemedic"))] | length > 0' >/dev/null 2>&1 ||
    kubectl get events.events.k8s.io -n shop -o json |
    jq -e '[.items[] | select(.regarding.name == "zombie-factory")] | length > 0' >/dev/null 2>&1; then
    ok "an Event names the pod"
else
    fail "no Event on the pod"
fi

# ---------------------------------------------------------------------------
step "5b. kubectl nodemedic in a terminal: the remediated node's story"
# The plugin as a person runs it: a shell in tmux, kubectl finding
# kubectl-nodemedic on PATH, the output read from the terminal's screen.
plugin_dir="$images_out/plugin-bin"
mkdir -p "$plugin_dir"
(cd "$repo" && cargo build -q -p kubectl-nodemedic) &&
    plugin_target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory) &&
    cp "$plugin_target/debug/kubectl-nodemedic" "$plugin_dir/" &&
    ok "kubectl-nodemedic built for this host" || fail "building kubectl-nodemedic"
session="nodemedic-e2e-$$"
screen_text() { tmux capture-pane -p -J -S - -t "$session" 2>/dev/null; }
tmux new-session -d -s "$session" -x 220 -y 200 \
    "env -i HOME=$HOME TERM=xterm PATH=$plugin_dir:$(dirname "$(command -v kubectl)"):/usr/bin:/bin KUBECONFIG=$KUBECONFIG bash --norc --noprofile"
# As a person would, once more if the API server did not answer (a busy
# machine: the plugin says "cannot reach the cluster").
tmux send-keys -t "$session" "for i in 1 2 3; do kubectl nodemedic explain $node && break; sleep 5; done; echo END-OF-EXPLAIN" Enter
wait_for "kubectl nodemedic explain finishes in the terminal" 60 sh -c "tmux capture-pane -p -J -S - -t $session | grep -q '^END-OF-EXPLAIN'"
screen=$(screen_text)
tmux kill-session -t "$session" 2>/dev/null || true
for want in "Policy e2e-zombies (Enforce)" "SignalParent: Executed" "pod shop/zombie-factory" "cordon: schedulable"; do
    case "$screen" in
        *"$want"*) ok "explain shows: $want" ;;
        *) fail "explain in the terminal lacks \"$want\"; the screen was:
$screen" ;;
    esac
done

# ---------------------------------------------------------------------------
step "6. the agent's limits, with a token bound to the running agent pod"
token=$(kubectl -n "$ns" create token "$agent_sa" --bound-object-kind Pod \
    --bound-object-name "$agent_pod" --duration 10m)
agent_kc="$images_out/agent.kubeconfig"
server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
cat >"$agent_kc" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: kind, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: agent, user: {token: "$token"}}]
contexts: [{name: agent, context: {cluster: kind, user: agent}}]
current-context: agent
EOF
as_agent() { kubectl --kubeconfig "$agent_kc" "$@"; }
if as_agent patch nhr "$node" --subresource=status --type=merge --dry-run=server \
    -p '{"status":{"problems":"e2e probe"}}' >/dev/null 2>&1; then
    ok "the agent may write its own node's report status"
else
    fail "the agent cannot write its own report status"
fi
out=$(as_agent create --dry-run=server -f - 2>&1 <<'EOF' || true
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthReport
metadata: {name: some-other-node}
spec: {}
EOF
)
case "$out" in
    *"may write only NodeHealthReport $node"*) ok "another node's report is denied by the admission policy" ;;
    *) fail "writing another node's report: $out" ;;
esac
for check in "patch nodes" "create pods/eviction -n shop" "get secrets -n $ns" "patch nodehealthreports"; do
    # shellcheck disable=SC2086
    if [ "$(as_agent auth can-i $check 2>/dev/null)" = no ]; then ok "agent cannot $check"; else fail "agent can $check"; fi
done

# ---------------------------------------------------------------------------
step "6b. trust boundaries: who writes report spec, a forged request, what the agent's privileges read"
forged_spec='{"spec":{"actionRequests":[{"id":"e2e-forged","action":"SignalParent","target":{"pid":PID,"startTime":START,"comm":"bystander"},"signal":"SIGKILL","policy":"e2e-zombies","requestedAt":"NOW"}]}}'
out=$(kubectl patch nhr "$node" --type=merge --dry-run=server -p "$(echo "$forged_spec" | sed 's/PID/4242/; s/START/1/; s/NOW/2026-01-01T00:00:00Z/')" 2>&1 || true)
case "$out" in
    *"is written only by the nodemedic operator"*) ok "a report spec write by a non-operator identity (cluster admin here) is denied by the admission policy" ;;
    *) fail "a report spec write by a cluster admin: $out" ;;
esac
# A bystander process, and a pod with exactly the agent pod's privileges
# (hostPID, uid 0, every capability dropped but KILL).
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: bystander, namespace: shop}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: main, image: "localhost/nodemedic-workload:$tag", imagePullPolicy: Never, args: [rename, bystander]}
---
apiVersion: v1
kind: Pod
metadata: {name: agent-twin, namespace: shop}
spec:
  hostPID: true
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: "localhost/nodemedic-workload:$tag"
      imagePullPolicy: Never
      args: [rename, agent-twin]
      securityContext:
        runAsUser: 0
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL], add: [KILL]}
EOF
wait_for "the bystander and the agent's twin run" 60 sh -c \
    "kubectl -n shop get pod bystander agent-twin -o jsonpath='{.items[*].status.phase}' | grep -qx 'Running Running'"
twin() { kubectl -n shop exec agent-twin -- /usr/local/bin/nodemedic-workload "$@"; }
op_pid=$(twin find-pid nodemedic-opera 2>/dev/null | head -n1 | cut -d' ' -f1 || true)
if [ -n "$op_pid" ]; then
    if twin read-file "/proc/$op_pid/stat" >/dev/null 2>&1; then
        ok "with the agent's privileges: another pod's process stat is readable (what the agent needs)"
    else
        fail "with the agent's privileges: /proc/$op_pid/stat of the operator is not readable"
    fi
    rc=0
    twin read-file "/proc/$op_pid/root/var/run/secrets/kubernetes.io/serviceaccount/token" >/dev/null 2>&1 || rc=$?
    if [ "$rc" = 3 ]; then
        ok "with the agent's privileges: the operator's ServiceAccount token through /proc/PID/root is denied"
    else
        fail "reading the operator's token through /proc/$op_pid/root: exit $rc (want 3, permission denied)"
    fi
else
    fail "no operator process found from the agent's twin"
fi
read -r by_pid by_start < <(twin find-pid bystander 2>/dev/null | head -n1) || true
# A stolen operator token: the operator is stopped so that it does not
# prune the forged request before the agent sees it.
op_sa=$(kubectl -n "$ns" get deploy -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].spec.template.spec.serviceAccountName}')
kubectl -n "$ns" scale deploy -l app.kubernetes.io/component=operator --replicas=0 >/dev/null
no_operator() { [ -z "$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=operator -o name 2>/dev/null)" ]; }
wait_for "the operator is stopped" 60 no_operator
op_token=$(kubectl -n "$ns" create token "$op_sa" --duration 10m)
op_kc="$images_out/operator.kubeconfig"
sed "s|token: \".*\"|token: \"$op_token\"|" "$agent_kc" >"$op_kc"
forged=$(echo "$forged_spec" | sed "s/PID/${by_pid:-0}/; s/START/${by_start:-0}/; s/NOW/$(date -u +%Y-%m-%dT%H:%M:%SZ)/")
if kubectl --kubeconfig "$op_kc" patch nhr "$node" --type=merge -p "$forged" >/dev/null 2>&1; then
    ok "a forged SignalParent (SIGKILL to a process with no zombies) written with the operator's token"
else
    fail "writing the forged request with the operator's token"
fi
refused() {
    kubectl get nhr "$node" -o json | jq -e \
        '[.status.actionResults[]? | select(.id == "e2e-forged" and .outcome == "Refused" and .reason == "NotAZombieParent")] | length > 0'
}
wait_for "the agent refuses the forged request (NotAZombieParent)" 60 refused
still=$(twin find-pid bystander 2>/dev/null | head -n1 || true)
restarts=$(kubectl -n shop get pod bystander -o jsonpath='{.status.containerStatuses[0].restartCount}')
if [ "$still" = "$by_pid $by_start" ] && [ "$restarts" = 0 ]; then
    ok "the bystander was not signalled"
else
    fail "the bystander: was '$by_pid $by_start', now '$still', restarts $restarts"
fi
kubectl -n shop delete pod bystander agent-twin --wait=false >/dev/null
# The operator comes back: it releases the policy deleted below.
kubectl -n "$ns" scale deploy -l app.kubernetes.io/component=operator --replicas=1 >/dev/null

# ---------------------------------------------------------------------------
step "7. helm uninstall leaves nothing behind"
# The policy's finalizer holds it until the operator has released what it
# holds; then it goes.
if kubectl delete nhp e2e-zombies --timeout=120s >/dev/null 2>&1; then
    ok "the deleted policy is released by the operator's finalizer and goes"
else
    fail "the policy e2e-zombies is still there 120 s after its deletion: $(kubectl get nhp e2e-zombies -o jsonpath='{.metadata.finalizers}' 2>&1)"
    kubectl patch nhp e2e-zombies --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
fi
kubectl -n shop delete pod zombie-factory --wait=false >/dev/null
helm uninstall "$release" -n "$ns" --wait --timeout 3m >/dev/null && ok "helm uninstall" || fail "helm uninstall"
no_pods() { [ -z "$(kubectl -n "$ns" get pods -o name 2>/dev/null)" ]; }
wait_for "the release's pods are gone (the agent stops within 5 s of SIGTERM)" 90 no_pods
left=$(kubectl get all,sa,role,rolebinding,clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding,pdb,lease -A \
    -l "app.kubernetes.io/instance=$release" -o name 2>/dev/null)
pods_left=$(kubectl -n "$ns" get pods -o name 2>/dev/null)
if [ -z "$left" ] && [ -z "$pods_left" ]; then
    ok "no object of the release is left (CRDs and their objects stay, as Helm keeps crds/ by design)"
else
    fail "left behind: $left $pods_left"
fi
# The lease the operator created is not a chart object.
kubectl -n "$ns" delete lease --all >/dev/null 2>&1 || true

echo
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
