#!/usr/bin/env bash
# End-to-end scenarios of nodemedic on three real nodes: a kind cluster of
# one control plane and two workers (tests/kind/cluster.sh with
# NODEMEDIC_KIND_WORKERS=2), the chart installed from locally built images,
# real pods made sick.
#
#   tests/kind/e2e-nodes.sh                    # every scenario (make e2e-kind-nodes)
#   tests/kind/e2e-nodes.sh drain culprit      # only these (after the setup checks)
#   KEEP_CLUSTER=1 tests/kind/e2e-nodes.sh     # leave the cluster running
#   REUSE_CLUSTER=1 KEEP_CLUSTER=1 tests/kind/e2e-nodes.sh agent-down
#                                              # use a running cluster of that
#                                              # name (with the release), keep it
#
# Named checks, in order (each prints "ok   <check>" or "FAIL <check>: what
# was expected"; a failed scenario dumps pods, logs, reports, ledgers):
#   setup      provision, images, cluster up (3 nodes), the images loaded
#   net        tests/kind/netcheck.sh: pod-to-pod, pod-to-service, DNS, API
#              server across the workers; pods stay on the machine. Nothing
#              else runs unless it passes.
#   install    helm install; an agent Ready on each of the 3 nodes, both
#              operator replicas (on the control plane) Ready
#   prometheus Prometheus 2.42 on the host scrapes the 5 pods through the
#              API server (as the chart's ServiceMonitors would) and evaluates
#              the chart's rules (for: 20s); drain, agent-down and storm then
#              wait for NodemedicDetectorFiring, NodemedicReportsStale and
#              NodemedicStormActive to fire
#   drain      worker A has a zombie problem (30 zombies, per-node
#              threshold 20, no single culprit parent) in one pod: the agent
#              reports it as scope Pod and the default-scoped Cordon is held
#              (PodContained); the policy with scope Any on [Cordon, Drain]
#              then cordons A (annotation cordoned-by) and drains
#              it: the Deployment's 2 pods run again on worker B, the
#              DaemonSet pods (agent, kube-proxy, a workload DaemonSet) and
#              the excluded namespace's pod stay on A with the same uids, the
#              Drain step is Done in the ledger (`kubectl get nrm`) with 2
#              evicted; once the problem is gone A is uncordoned after the
#              healthy cooldown
#   culprit    issue 14: three culprits on worker A under ladders ending in
#              Cordon and Drain (default scopes): a zombie factory, an fd
#              leaker (290 fds under a soft limit of 300) and three parents
#              blocked in vfork(). Pod-level steps only: SignalParent for the
#              factory's parent, EvictPod for the leaker; Cordon and Drain
#              held PodContained; A stays schedulable; the vfork parents are
#              waits (status.waitingTasks), no hung task. Then host processes
#              in A's node container make zombies (node-wide): the same
#              ladder cordons and drains A; healthy again, A is uncordoned
#   agent-restart  a SignalParent (SIGKILL) request for a zombie parent on
#              worker B is written while B's agent is frozen (SIGSTOP, by
#              pid); the agent pod is deleted; the new agent executes the
#              request once (Signalled) or refuses it as expired, never twice:
#              one result for the request id, the parent ended once, and the
#              step's record agrees
#   agent-down B's kubelet is stopped and its agent container stopped: the
#              report goes stale, the policy turns Degraded (StaleReports)
#              naming B, and B counts toward the storm (StormActive with
#              maxUnhealthy 0); kubelet back, the agent restarts, the report
#              is fresh again and Degraded clears
#   storm      issue 15: node-wide zombies on both workers, maxUnhealthy 1:
#              StormActive=True, the due Cordon held StormActive on both, no
#              node-level action (nodes, ledgers); B recovers, the storm
#              ends, A's held Cordon runs; B never cordoned
#   drain-pdb  issue 15: a Deployment on A with a PDB maxUnavailable 0; a
#              node-wide problem cordons and drains A; the PDB holds the pod
#              until the drain timeout (the install sets 20 s): the Drain step
#              ends Failed (Timeout, 1 remaining), the pod still runs
#   failover   issue 15: a ladder on A (Event, Taint after 8 s, Cordon after
#              16 s); the leading operator pod (the Lease's holder) is deleted
#              between the Taint and the Cordon; the standby takes over within
#              the lease duration (8 s) and finishes the ladder; every step ran
#              exactly once (ledger history and Events, counts printed)
#   apiserver  issue 15: the same ladder; kube-apiserver's container on the control plane is
#              stopped between the Taint and the Cordon (kubelet restarts it);
#              the agent keeps scanning (its metrics, read inside the node) and
#              catches up; the ladder resumes; every step ran once
#   upgrade    issue 15: the release replaced by the chart, CRDs and images of
#              the commit before the newest CRD change (git archive; its
#              images built once and cached); the same ladder; between the
#              Taint and the Cordon the upgrade as docs/install.md says; all
#              pods on this tree's image; every step ran once
#   dashboard  after the scenarios: agent.pidsTrendWindow=1m by helm
#              upgrade, a pod leaking fds and a zombie storm building up on
#              A until its agent exports the fd, pod pids and node pids ETAs,
#              A paused for 15 s; then every query of the chart's Grafana
#              dashboard answers over the run, with series unless the
#              binaries export its metrics and the run made no such event
#              (listed as idle)
#   teardown   cluster down, the host as before (check-host)
#
# Environment: KIND_CLUSTER_NAME (default nodemedic-nodes: not the
# single-node tier's name, so both can run side by side), KEEP_CLUSTER=1,
# NODEMEDIC_REQUIRE_REAL_HOST=1 (fail instead of skip where kind cannot run),
# plus those of cluster.sh.
# `ok` and `fail` always succeed, so `A && ok || fail` is an if-then-else here.
# shellcheck disable=SC2015
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-nodemedic-nodes}"
export NODEMEDIC_KIND_WORKERS=2
ns=nodemedic-system
release=nodemedic
tag=e2e
all_scenarios=(drain culprit agent-restart agent-down storm drain-pdb failover apiserver upgrade)

scenarios=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        drain | culprit | agent-restart | agent-down | storm | drain-pdb | failover | apiserver | upgrade) scenarios+=("$arg") ;;
        *) echo "e2e-nodes.sh: unknown scenario '$arg' (known: ${all_scenarios[*]})" >&2; exit 2 ;;
    esac
done
[ "${#scenarios[@]}" -gt 0 ] || scenarios=("${all_scenarios[@]}")

skip_or_fail() {
    if [ "${NODEMEDIC_REQUIRE_REAL_HOST:-0}" = 1 ]; then
        echo "e2e-nodes.sh: FAIL: cannot run the kind tier here: $*" >&2
        exit 1
    fi
    echo "!!! e2e-nodes.sh: SKIPPING the three-node kind tier: $* !!!" >&2
    exit 0
}
if ! docker info >/dev/null 2>&1 && [ "$(id -u)" != 0 ]; then
    skip_or_fail "podman mode needs root (and no Docker engine answers)"
fi

passed=0
failed=0
scenario_failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() {
    echo "FAIL $*"
    failed=$((failed + 1))
    scenario_failed=1
}
timings=()
t_all=$SECONDS
t_stage=$SECONDS
stage() { # NAME: start a timed stage
    printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"
    t_stage=$SECONDS
    stage_name="$*"
    scenario_failed=0
}
stage_done() { timings+=("$(printf '%-32s %4ss%s' "$stage_name" "$((SECONDS - t_stage))" "$([ "$scenario_failed" = 0 ] || echo '  FAILED')")"); }

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

stage "setup: provision, images"
"$repo/tests/envtest/provision.sh" >/dev/null
"$repo/tests/kind/provision.sh" >/dev/null
images_out="$(mktemp -d)"
"$repo/tests/kind/images.sh" --tag "$tag" --with-workload --out "$images_out"
stage_done

diagnose() {
    echo "--- diagnostics ---"
    kubectl get nodes -o wide 2>&1 || true
    kubectl get pods -A -o wide 2>&1 | head -60 || true
    kubectl -n "$ns" logs -l app.kubernetes.io/component=agent --tail=30 --prefix 2>&1 | tail -n 90 || true
    kubectl -n "$ns" logs -l app.kubernetes.io/component=operator --tail=60 --prefix 2>&1 | tail -n 120 || true
    kubectl get nrm -o yaml 2>&1 | head -150 || true
    kubectl get nhr -o yaml 2>&1 | grep -v '^ *- *[0-9]' | head -150 || true
    kubectl get nhp -o yaml 2>&1 | sed -n '/^  status:/,$p' | head -80 || true
    kubectl get events -A --sort-by=.lastTimestamp 2>&1 | tail -n 30 || true
}
cleanup() {
    local rc=$?
    if [ "$failed" != 0 ] || [ "$rc" != 0 ]; then diagnose; fi
    if declare -F stop_prometheus >/dev/null; then stop_prometheus; fi
    rm -rf "$images_out"
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
        echo "keeping kind cluster $KIND_CLUSTER_NAME (KIND_CLUSTER_NAME=$KIND_CLUSTER_NAME tests/kind/cluster.sh down)"
    else
        "$repo/tests/kind/cluster.sh" down || true
    fi
}
trap cleanup EXIT

stage "setup: cluster up (3 nodes)"
if [ "${REUSE_CLUSTER:-0}" = 1 ] && [ -s "$("$repo/tests/kind/cluster.sh" kubeconfig)" ]; then
    echo "reusing the running cluster $KIND_CLUSTER_NAME (REUSE_CLUSTER=1)"
else
    "$repo/tests/kind/cluster.sh" up >/dev/null
fi
eval "$("$repo/tests/kind/cluster.sh" env)"
engine="$KIND_EXPERIMENTAL_PROVIDER" # podman or docker: the CLI that reaches the node containers
"$repo/tests/kind/cluster.sh" load "$images_out/nodemedic.tar" "$images_out/nodemedic-workload.tar"
mapfile -t workers < <(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
[ "${#workers[@]}" = 2 ] && ok "setup: 3 nodes, workers ${workers[*]}" || { fail "setup: workers: ${workers[*]}"; exit 1; }
A="${workers[0]}" B="${workers[1]}"
kubectl label node "$A" "$B" nodemedic.io/e2e-pool=workers --overwrite >/dev/null
stage_done

stage "net: cross-node pod networking"
if "$repo/tests/kind/netcheck.sh"; then
    ok "net: pod networking across the nodes"
else
    fail "net: pod networking across the nodes (see the net: lines above); no scenario runs without it"
    stage_done
    exit 1
fi
stage_done

# ---------------------------------------------------------------------------
stage "install"
values="$images_out/values.yaml"
cat >"$values" <<EOF
image: {repository: localhost/nodemedic, tag: "$tag", pullPolicy: Never}
agent: {interval: 2s, heartbeat: 10s}
operator:
  leaderElection: {leaseDuration: 8s}
  # drain-pdb: a drain that a PodDisruptionBudget blocks fails after this
  extraEnv: [{name: NODEMEDIC_DRAIN_TIMEOUT, value: 20s}]
  # both replicas on the control plane: the workers are the scenarios' nodes
  nodeSelector: {node-role.kubernetes.io/control-plane: ""}
  tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
EOF
if helm upgrade --install "$release" "$repo/charts/nodemedic" -n "$ns" --create-namespace -f "$values" \
    --wait --timeout 5m >/dev/null; then
    ok "install: helm install from locally built images"
else
    fail "install: helm install"
    exit 1
fi
ds=$(kubectl -n "$ns" get ds -l app.kubernetes.io/component=agent -o name)
wait_for "install: an agent Ready on each of the 3 nodes" 120 \
    sh -c "[ \"\$(kubectl -n $ns get $ds -o jsonpath='{.status.numberReady}')\" = 3 ]"
ready_ops=$(kubectl -n "$ns" get deploy -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].status.readyReplicas}')
[ "$ready_ops" = 2 ] && ok "install: operator replicas Ready: $ready_ops" || fail "install: operator replicas Ready: '$ready_ops', want 2"
for n in "$A" "$B"; do
    wait_for "install: the agent on $n publishes its report" 60 kubectl get nhr "$n" -o jsonpath='{.status.lastScanTime}'
done
stage_done
[ "$failed" = 0 ] || exit 1

# ---------------------------------------------------------------------------
# Prometheus on the host (issue 15): Debian's prometheus 2.42 scrapes every
# agent and operator pod through the API server's pod proxy, labelled as the
# chart's ServiceMonitors would have them (job = the Service, namespace, pod,
# node, instance = the pod's address), and evaluates the chart's
# PrometheusRule rendered with short `for`s. Scenarios wait for alerts on
# the faults they make (prom_alert); the last stage evaluates every query of
# the chart's dashboard over the whole run. NODEMEDIC_KIND_PROMETHEUS=0 skips
# it; NODEMEDIC_KIND_PROMETHEUS_ADDR (default 127.0.0.1:19090) is where it listens.
prom_addr=""
promcheck=""
prom_pid=""
prom_dir=""
prom_targets_pid=""
stop_prometheus() {
    [ -z "$prom_targets_pid" ] || kill "$prom_targets_pid" 2>/dev/null || true
    [ -z "$prom_pid" ] || kill "$prom_pid" 2>/dev/null || true
}
# The targets Prometheus scrapes, as file_sd JSON: one per endpoint of the
# release's Services on the port named admin, labelled as the chart's
# ServiceMonitors would have it (job = the Service, namespace, pod, node,
# instance = the pod's address), scraped through the API server's pod proxy.
write_prom_targets() { # API-SERVER-HOST:PORT
    kubectl -n "$ns" get endpointslices -o json | jq --arg server "$1" --arg release "$release" '[
        .items[] | select(.metadata.labels["app.kubernetes.io/instance"] == $release) as $s
        | ($s.ports[]? | select(.name == "admin") | .port) as $port
        | $s.endpoints[]? | select(.targetRef.kind == "Pod")
        | {targets: [$server], labels: {
            job: $s.metadata.labels["kubernetes.io/service-name"], namespace: $s.metadata.namespace,
            pod: .targetRef.name, node: .nodeName, instance: "\(.addresses[0]):\($port)",
            __metrics_path__: "/api/v1/namespaces/\($s.metadata.namespace)/pods/\(.targetRef.name):\($port)/proxy/metrics"}}
    ]' >"$prom_dir/targets.json.new" && mv "$prom_dir/targets.json.new" "$prom_dir/targets.json"
}
start_prometheus() {
    local server target kube_version
    prom_dir="$images_out/prometheus"
    mkdir -p "$prom_dir/data"
    eval "$("$repo/tests/prometheus/provision.sh" --print-env)" || return 1
    (cd "$repo" && cargo build -q -p nodemedic-tests --bin nodemedic-promcheck) || return 1
    target=$(cd "$repo" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
    promcheck="$target/debug/nodemedic-promcheck"
    # The API server and the admin's client certificate, from the kubeconfig.
    server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
    server="${server#https://}"
    kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$prom_dir/ca.crt"
    kubectl config view --raw --minify -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$prom_dir/client.crt"
    kubectl config view --raw --minify -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$prom_dir/client.key"
    # helm assumes Kubernetes 1.20 without a cluster; the chart needs 1.33+.
    kube_version="$(kubectl version -o json | jq -r .serverVersion.gitVersion)"
    helm template "$release" "$repo/charts/nodemedic" -n "$ns" -f "$values" --kube-version "$kube_version" \
        --set metrics.prometheusRule.enabled=true \
        --set metrics.prometheusRule.staleFor=20s --set metrics.prometheusRule.stormFor=20s \
        --set metrics.prometheusRule.detectorFiringFor=20s \
        --show-only templates/monitoring/prometheusrule.yaml | "$promcheck" rule-file >"$prom_dir/rules.yaml" || return 1
    helm template "$release" "$repo/charts/nodemedic" -n "$ns" -f "$values" --kube-version "$kube_version" \
        --set metrics.dashboard.enabled=true \
        --show-only templates/monitoring/dashboard.yaml >"$prom_dir/dashboard.yaml" || return 1
    "$NODEMEDIC_PROMETHEUS_BIN_DIR/promtool" check rules "$prom_dir/rules.yaml" >/dev/null || return 1
    # Debian builds Prometheus without Kubernetes service discovery, so the
    # script does what it would: every endpoint of the release's Services on
    # the port named admin (what the chart's ServiceMonitors select) becomes
    # a target, rewritten every 5 s while the run lasts (pods come and go).
    write_prom_targets "$server" || return 1
    (while sleep 5; do write_prom_targets "$server" || true; done) &
    prom_targets_pid=$!
    cat >"$prom_dir/prometheus.yml" <<EOF
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: [rules.yaml]
scrape_configs:
  - job_name: nodemedic-pods
    scheme: https
    tls_config: {ca_file: $prom_dir/ca.crt, cert_file: $prom_dir/client.crt, key_file: $prom_dir/client.key}
    file_sd_configs: [{files: [$prom_dir/targets.json], refresh_interval: 5s}]
EOF
    prom_addr="${NODEMEDIC_KIND_PROMETHEUS_ADDR:-127.0.0.1:19090}"
    (cd "$prom_dir" && exec "$NODEMEDIC_PROMETHEUS_BIN_DIR/prometheus" --config.file=prometheus.yml \
        --storage.tsdb.path=data --web.listen-address="$prom_addr" --log.level=warn >prometheus.log 2>&1) &
    prom_pid=$!
    prom_start=$(date -u +%s)
}
prom_query() { # PROMQL -> the JSON answer of an instant query
    curl -s --max-time 5 -G "http://$prom_addr/api/v1/query" --data-urlencode "query=$1"
}
prom_targets_up() { # every pod scraped: 3 agents, 2 operators
    [ "$(prom_query 'count(up{namespace="'"$ns"'"} == 1)' | jq -r '.data.result[0].value[1] // 0')" = 5 ]
}
prom_alert() { # CHECK ALERT [--label k=v ...]: the chart's alert fires on real scrapes
    local c=$1 alert=$2 out
    shift 2
    [ -n "$prom_addr" ] || return 0
    if out="$("$promcheck" wait-alert --prometheus "$prom_addr" --alert "$alert" --timeout-seconds 120 "$@" 2>&1)"; then
        ok "$c: Prometheus fires $alert ($out)"
    else
        fail "$c: $out"
    fi
}

if [ "${NODEMEDIC_KIND_PROMETHEUS:-1}" != 0 ]; then
    stage "prometheus: on the host, scraping every pod through the API server"
    if start_prometheus; then
        if ! wait_for "prometheus: the 3 agents and 2 operators scraped (up == 1)" 90 prom_targets_up; then
            echo "     targets:"
            curl -s --max-time 5 "http://$prom_addr/api/v1/targets" |
                jq -r '.data.activeTargets[]? | "     \(.labels.pod // .scrapeUrl) \(.health) \(.lastError)"' || true
            echo "     prometheus log:"
            tail -n 20 "$prom_dir/prometheus.log" | sed 's/^/     /' || true
        fi
    else
        fail "prometheus: could not start it (log: ${prom_dir:-?}/prometheus.log)"
        prom_addr=""
    fi
    stage_done
fi

agent_pod() { # NODE: the agent pod there that is not being deleted
    kubectl -n "$ns" get pods -l app.kubernetes.io/component=agent --field-selector "spec.nodeName=$1" -o json |
        jq -r '[.items[] | select(.metadata.deletionTimestamp == null) | .metadata.name] | first // empty'
}
# The host pid (in the node container) of a pod's first container.
container_pid() { # NODE POD
    local id
    id="$("$engine" exec "$1" crictl ps -q --label "io.kubernetes.pod.name=$2" | head -n1)"
    [ -n "$id" ] || return 1
    "$engine" exec "$1" crictl inspect -o go-template --template '{{.info.pid}}' "$id"
}
# Delete a policy and wait until the operator's finalizer lets it go.
delete_policy() {
    if ! kubectl delete nhp "$1" --timeout=90s >/dev/null 2>&1; then
        fail "$2: the policy $1 is still there 90 s after its deletion (finalizer: $(kubectl get nhp "$1" -o jsonpath='{.metadata.finalizers}' 2>&1))"
        kubectl patch nhp "$1" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    fi
}
zombie_pod() { # NAMESPACE NAME NODE
    cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $2, namespace: $1}
spec:
  nodeName: $3
  terminationGracePeriodSeconds: 2
  containers:
    - name: factory
      image: localhost/nodemedic-workload:$tag
      imagePullPolicy: Never
      args: [zombies, --count, "30"]
EOF
}
condition_is() { # NODE POLICY STATUS
    kubectl get nhr "$1" -o json | jq -e --arg p "$2" --arg s "$3" \
        '[.status.conditions[]? | select(.policy == $p and .type == "ZombiesDetected" and .status == $s)] | length > 0'
}
step_record() { # NODE POLICY ACTION -> the step record (JSON) or null
    kubectl get nrm "$1" -o json 2>/dev/null | jq -c --arg p "$2" --arg a "$3" \
        '[.spec.episodes[]? | select(.policy == $p) | .steps[]? | select(.action == $a)] | first'
}

# ---------------------------------------------------------------------------
scenario_drain() {
    stage "drain"
    local c="drain"
    kubectl delete namespace shop sick --ignore-not-found --timeout=90s >/dev/null
    kubectl create namespace shop >/dev/null
    kubectl create namespace sick >/dev/null
    # the Deployment lands on A: B is cordoned (by hand) while it starts
    kubectl cordon "$B" >/dev/null
    kubectl apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: localhost/nodemedic-workload:$tag
          imagePullPolicy: Never
          args: [rename, web]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: node-helper, namespace: shop}
spec:
  selector: {matchLabels: {app: node-helper}}
  template:
    metadata: {labels: {app: node-helper}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {nodemedic.io/e2e-pool: workers}
      containers:
        - name: helper
          image: localhost/nodemedic-workload:$tag
          imagePullPolicy: Never
          args: [rename, helper]
EOF
    zombie_pod sick zombie-factory "$A" | kubectl apply -f - >/dev/null
    kubectl -n shop rollout status deploy/web --timeout=90s >/dev/null &&
        ok "$c: Deployment web has 2 pods on $A" || fail "$c: Deployment web did not become available"
    kubectl uncordon "$B" >/dev/null
    kubectl -n shop rollout status ds/node-helper --timeout=90s >/dev/null || fail "$c: DaemonSet node-helper did not roll out"
    wait_for "$c: the zombie factory runs on $A (namespace sick, excluded)" 60 \
        sh -c "kubectl -n sick get pod zombie-factory -o jsonpath='{.status.phase}' | grep -qx Running"
    local on_a
    on_a="$(kubectl -n shop get pods -l app=web -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ')"
    [ "$on_a" = "$A=2 " ] || fail "$c: want both web pods on $A before the drain, have: $on_a"
    # the pods that must stay on A: every DaemonSet pod and the excluded one, by uid
    local stay_before
    stay_before="$(kubectl get pods -A --field-selector "spec.nodeName=$A" -o json | jq -r \
        '.items[] | select(.metadata.ownerReferences[0].kind == "DaemonSet" or .metadata.namespace == "sick") | "\(.metadata.namespace)/\(.metadata.name) \(.metadata.uid)"' | sort)"
    [ "$(wc -l <<<"$stay_before")" -ge 4 ] || fail "$c: want at least 4 pods to stay on $A (agent, kube-proxy, node-helper, zombie-factory), have: $stay_before"

    kubectl apply -f - >/dev/null <<'EOF'
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: e2e-drain}
spec:
  mode: Enforce
  nodeSelector: {matchLabels: {nodemedic.io/e2e-pool: workers}}
  detectors:
    # 20 zombies on the node, no parent is a culprit on its own; all in the
    # zombie factory's pod, so the agent reports the problem as scope Pod
    zombies: {threshold: 20, perParentThreshold: 4194304, minAge: 0s, for: 4s}
  actions:
    zombies:
      - {action: Cordon}
      - {action: Drain, after: 4s}
  safety:
    maxUnhealthy: 1
    cooldown: 5s
    uncordonWhenHealthy: true
    excludeNamespaces: [kube-system, sick]
EOF

    # Scopes: the problem is contained in one pod, so the node-wide Cordon
    # (default scope Node) is held until a pod-level step was carried out;
    # the ladder has none, so it stays held (reason PodContained).
    pod_contained() { step_record "$A" e2e-drain Cordon | jq -e '.phase == "Held" and .reason == "PodContained"'; }
    wait_for "$c: the agent reports the zombies as one pod's; the Cordon is held (PodContained)" 90 pod_contained
    # The detector has been firing since: the chart's alert (for: 20s here).
    prom_alert "$c" NodemedicDetectorFiring --label "node=$A" --label policy=e2e-drain --label detector=zombies
    [ "$(kubectl get node "$A" -o jsonpath='{.spec.unschedulable}')" != true ] ||
        fail "$c: $A was cordoned for a problem contained in one pod"
    # The policy asks explicitly for node-wide steps on a pod's problem.
    kubectl apply -f - >/dev/null <<'EOF'
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: e2e-drain}
spec:
  mode: Enforce
  nodeSelector: {matchLabels: {nodemedic.io/e2e-pool: workers}}
  detectors:
    zombies: {threshold: 20, perParentThreshold: 4194304, minAge: 0s, for: 4s}
  actions:
    zombies:
      - {action: Cordon, scope: Any}
      - {action: Drain, after: 4s, scope: Any}
  safety:
    maxUnhealthy: 1
    cooldown: 5s
    uncordonWhenHealthy: true
    excludeNamespaces: [kube-system, sick]
EOF
    cordoned() {
        [ "$(kubectl get node "$A" -o jsonpath='{.spec.unschedulable}')" = true ] &&
            [ "$(kubectl get node "$A" -o jsonpath='{.metadata.annotations.nodemedic\.io/cordoned-by}')" = e2e-drain ]
    }
    wait_for "$c: $A is cordoned by nodemedic (annotation cordoned-by=e2e-drain)" 90 cordoned
    drained() { step_record "$A" e2e-drain Drain | jq -e '.phase == "Done"'; }
    wait_for "$c: the Drain step is Done in $A's ledger (kubectl get nrm)" 120 drained
    local rec
    rec="$(step_record "$A" e2e-drain Drain)"
    echo "$rec" | jq -e '.drain.evicted == 2 and .drain.remaining == 0' >/dev/null &&
        ok "$c: the drain evicted the 2 web pods, none remaining ($(echo "$rec" | jq -c .drain))" ||
        fail "$c: want drain progress evicted 2, remaining 0; the step record: $rec"
    web_on_b() {
        local ready nodes
        ready="$(kubectl -n shop get deploy web -o jsonpath='{.status.readyReplicas}')"
        nodes="$(kubectl -n shop get pods -l app=web -o json | jq -r '[.items[] | select(.metadata.deletionTimestamp == null) | .spec.nodeName] | unique | join(",")')"
        [ "$ready" = 2 ] && [ "$nodes" = "$B" ]
    }
    wait_for "$c: the Deployment's 2 pods run again, on $B" 120 web_on_b
    local stay_after
    stay_after="$(kubectl get pods -A --field-selector "spec.nodeName=$A" -o json | jq -r \
        '.items[] | select(.metadata.deletionTimestamp == null) | select(.metadata.ownerReferences[0].kind == "DaemonSet" or .metadata.namespace == "sick") | "\(.metadata.namespace)/\(.metadata.name) \(.metadata.uid)"' | sort)"
    [ "$stay_after" = "$stay_before" ] &&
        ok "$c: DaemonSet pods and the excluded pod stayed on $A, same uids ($(awk '{print $1}' <<<"$stay_after" | tr '\n' ' '))" ||
        fail "$c: want the pods on $A to stay; before: $(tr '\n' ' ' <<<"$stay_before"); after: $(tr '\n' ' ' <<<"$stay_after")"
    if kubectl get events -A -o json | jq -e --arg n "$A" \
        '[.items[] | select(.reason == "NodeDrained" and .involvedObject.name == $n)] | length > 0' >/dev/null; then
        ok "$c: a NodeDrained Event on $A"
    else
        fail "$c: no NodeDrained Event on $A"
    fi
    # the problem goes away: healthy for the cooldown, then nodemedic uncordons
    kubectl -n sick delete pod zombie-factory --wait=false >/dev/null
    uncordoned() {
        [ -z "$(kubectl get node "$A" -o jsonpath='{.spec.unschedulable}')" ] &&
            [ -z "$(kubectl get node "$A" -o jsonpath='{.metadata.annotations.nodemedic\.io/cordoned-by}')" ]
    }
    wait_for "$c: $A is uncordoned once healthy for the cooldown (annotation removed)" 120 uncordoned
    delete_policy e2e-drain "$c"
    kubectl delete namespace shop sick --wait=false >/dev/null
    stage_done
}

# ---------------------------------------------------------------------------
# Issue 14: a problem contained in one pod gets pod-level steps only; the same
# ladders reach the node for a node-wide problem.
episode_step() { # NODE POLICY DETECTOR ACTION -> the step record (JSON) or null
    kubectl get nrm "$1" -o json 2>/dev/null | jq -c --arg p "$2" --arg d "$3" --arg a "$4" \
        '[.spec.episodes[]? | select(.policy == $p and .detector == $d) | .steps[]? | select(.action == $a)] | first'
}
# The ledger's history (24 h) and Events outlive a policy: on a reused
# cluster an earlier run's policy of the same name left its own. Counts
# start at the policy's creation (mark_since, after applying it).
since=""
mark_since() { since="$(kubectl get nhp "$1" -o jsonpath='{.metadata.creationTimestamp}')"; }
history_count() { # NODE POLICY DETECTOR ACTION -> carried-out (not planned) entries in the ledger's history since $since
    kubectl get nrm "$1" -o json 2>/dev/null | jq --arg p "$2" --arg d "$3" --arg a "$4" --arg since "$since" \
        '[.spec.history[]? | select(.policy == $p and .detector == $d and .action == $a and ((.planned // false) == false) and .at >= $since)] | length'
}
detector_condition() { # NODE POLICY TYPE -> the condition (JSON) or null
    kubectl get nhr "$1" -o json | jq -c --arg p "$2" --arg t "$3" \
        '[.status.conditions[]? | select(.policy == $p and .type == $t)] | first'
}
not_cordoned() { # NODE
    [ -z "$(kubectl get node "$1" -o jsonpath='{.spec.unschedulable}')" ] &&
        [ -z "$(kubectl get node "$1" -o jsonpath='{.metadata.annotations.nodemedic\.io/cordoned-by}')" ]
}

scenario_culprit() {
    stage "culprit"
    local c="culprit" p=e2e-culprit
    # leftovers of an earlier run on a reused cluster
    kubectl delete nhp "$p" --ignore-not-found --timeout=90s >/dev/null
    host_zombies "$A" stop
    kubectl delete namespace culprit --ignore-not-found --timeout=90s >/dev/null
    kubectl create namespace culprit >/dev/null
    # three culprits on A: a zombie factory (30 zombies under one parent), an
    # fd leaker (290 fds under a soft RLIMIT_NOFILE of 300) and three
    # parents blocked in vfork() while their children sleep
    zombie_pod culprit zombies "$A" | kubectl apply -f - >/dev/null
    kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: fdleak, namespace: culprit}
spec:
  nodeName: $A
  terminationGracePeriodSeconds: 1
  containers:
    - name: leak
      image: localhost/nodemedic-workload:$tag
      imagePullPolicy: Never
      args: [hold-fds, "290", --soft-limit, "300"]
---
apiVersion: v1
kind: Pod
metadata: {name: vfork, namespace: culprit}
spec:
  nodeName: $A
  terminationGracePeriodSeconds: 1
  containers:
    - name: vfork
      image: localhost/nodemedic-workload:$tag
      imagePullPolicy: Never
      command: [/usr/local/bin/nodemedic-vfork, "3"]
EOF
    running3() {
        [ "$(kubectl -n culprit get pods -o json | jq '[.items[] | select(.status.phase == "Running")] | length')" = 3 ]
    }
    wait_for "$c: the zombie factory, the fd leaker and the vfork parents run on $A" 60 running3 || { stage_done; return; }
    # Every ladder ends in Cordon and Drain with their default scope (Node),
    # after a pod-level step where the detector has one. All steps are due
    # at once; the cooldown keeps two disruptive steps 5 s (two scans) apart,
    # so a node-wide step never runs on the report that still shows the
    # problem just fixed by the pod-level step (a SignalParent is Done on the
    # agent's result, which comes with the scan from before the signal).
    kubectl apply -f - >/dev/null <<EOF
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: $p}
spec:
  mode: Enforce
  nodeSelector: {matchLabels: {kubernetes.io/hostname: $A}}
  detectors:
    # the factory's parent (30) is a culprit on its own; three host parents
    # of 10 zombies each (30 on the node) are a node-wide problem
    zombies: {threshold: 25, perParentThreshold: 20, minAge: 0s, for: 2s}
    fdLeak: {usageRatio: 0.8, minOpenFds: 100, for: 2s}
    hungTasks: {minDuration: 2s, threshold: 1, for: 2s}
  actions:
    zombies:
      - {action: SignalParent, signal: SIGKILL}
      - {action: Cordon}
      - {action: Drain}
    fdLeak:
      # the culprits are bare pods: EvictPod evicts those only when asked
      - {action: EvictPod, drain: {evictUnmanagedPods: true}}
      - {action: Cordon}
      - {action: Drain}
    hungTasks:
      - {action: EvictPod, drain: {evictUnmanagedPods: true}}
      - {action: Cordon}
      - {action: Drain}
  safety:
    maxUnhealthy: 1
    cooldown: 5s
    uncordonWhenHealthy: true
EOF
    mark_since "$p"
    # the vfork parents: listed as waits, never counted as hung
    vfork_waits() {
        kubectl get nhr "$A" -o json | jq -e \
            '[.status.waitingTasks[]? | select(.reason == "VforkChild" and .process.workload.podName == "vfork")] | length >= 3'
    }
    wait_for "$c: the vfork pod's 3 blocked parents are in $A's status.waitingTasks (VforkChild)" 60 vfork_waits
    held_pod_contained() {
        kubectl get nrm "$A" -o json | jq -e --arg p "$p" \
            '[.spec.episodes[]? | select(.policy == $p) | .steps[]? | select((.action == "Cordon" or .action == "Drain") and .phase == "Held" and .reason == "PodContained")] | length > 0'
    }
    wait_for "$c: node-wide steps are held PodContained in $A's ledger" 60 held_pod_contained
    # Each detector's Cordon and Drain held PodContained, in the policy
    # status (one record per hold). Read while the holds are recent:
    # recentActions keeps the last 20, and the steps after this add more.
    held_in_status() {
        held="$(kubectl get nhp "$p" -o json | jq -c \
            '[.status.recentActions[]? | select((.action == "Cordon" or .action == "Drain") and .outcome == "Skipped" and (.message | contains("contained in pod"))) | "\(.detector)/\(.action)"] | unique')"
        [ "$held" = '["fdLeak/Cordon","fdLeak/Drain","zombies/Cordon","zombies/Drain"]' ]
    }
    local held=""
    wait_for "$c: the policy status shows Cordon and Drain held PodContained for zombies and fdLeak" 60 held_in_status ||
        echo "    (recentActions holds seen: $held; ledger: $(kubectl get nrm "$A" -o json | jq -c --arg p "$p" '[.spec.episodes[]? | select(.policy == $p) | {detector, steps: [.steps[]? | {action, phase, reason}]}]'))"
    signalled() { [ "$(history_count "$A" "$p" zombies SignalParent)" = 1 ]; }
    wait_for "$c: SignalParent (SIGKILL) ran for the zombie factory's parent" 60 signalled
    evicted() { ! kubectl -n culprit get pod fdleak >/dev/null 2>&1 && [ "$(history_count "$A" "$p" fdLeak EvictPod)" = 1 ]; }
    wait_for "$c: EvictPod ran: the fd-leaking pod is gone" 60 evicted
    cleared() {
        local t
        for t in ZombiesDetected FdLeakDetected; do
            detector_condition "$A" "$p" "$t" | jq -e '.status == "False"' >/dev/null || return 1
        done
    }
    wait_for "$c: the zombies and fdLeak conditions clear after the pod-level steps" 60 cleared
    local ended
    ended="$(kubectl -n culprit logs zombies | grep -c 'zombie parent .* ended' || true)"
    [ "$ended" = 1 ] && [ "$(kubectl -n culprit get pod zombies -o jsonpath='{.status.phase}')" = Running ] &&
        ok "$c: the zombie factory's parent ended once, the pod runs on" ||
        fail "$c: want the factory's parent ended once and the pod Running; ended $ended time(s), phase $(kubectl -n culprit get pod zombies -o jsonpath='{.status.phase}')"
    not_cordoned "$A" && ok "$c: $A is schedulable (no spec.unschedulable, no cordoned-by annotation)" ||
        fail "$c: want $A schedulable after a pod-contained problem; unschedulable='$(kubectl get node "$A" -o jsonpath='{.spec.unschedulable}')', cordoned-by='$(kubectl get node "$A" -o jsonpath='{.metadata.annotations.nodemedic\.io/cordoned-by}')'"
    local node_steps
    node_steps="$(kubectl get nrm "$A" -o json | jq -c --arg p "$p" --arg since "$since" \
        '[.spec.history[]? | select(.policy == $p and .at >= $since and (.action == "Cordon" or .action == "Drain" or .action == "Taint"))]')"
    [ "$node_steps" = "[]" ] && ok "$c: no node-level step in $A's ledger history" ||
        fail "$c: want no node-level step for pod-contained problems; history: $node_steps"
    # the vfork parents: no hung task, no hungTasks episode
    local hung
    hung="$(kubectl get nhr "$A" -o json | jq -c --arg p "$p" '{hungTasks: .status.summary.hungTasks, waiting: .status.summary.waitingTasks,
        findings: [.status.findings.hungTasks[]? | select(.process.workload.podName == "vfork")] | length,
        condition: ([.status.conditions[]? | select(.policy == $p and .type == "HungTasksDetected") | .status] | first)}')"
    echo "$hung" | jq -e '.hungTasks == 0 and .waiting >= 3 and .findings == 0 and .condition == "False"' >/dev/null &&
        [ "$(kubectl get nrm "$A" -o json | jq --arg p "$p" --arg since "$since" '[.spec.episodes[]?, (.spec.history[]? | select(.at >= $since)) | select(.policy == $p and .detector == "hungTasks")] | length')" = 0 ] &&
        ok "$c: the vfork parents count as no hung task ($hung), no hungTasks episode" ||
        fail "$c: want hungTasks 0, the 3 vfork parents only as waits, the HungTasksDetected condition False and no hungTasks episode; have $hung"
    # (gone within a few seconds, before the Drain below comes due)
    kubectl -n culprit delete pod --all --grace-period=1 --wait=false >/dev/null || true

    # A node-wide problem: three host processes (outside any pod, started
    # in A's node container) with 10 zombies each: no culprit parent, scope
    # Node; the same ladder cordons and drains A.
    host_zombies "$A" start
    node_scope() { detector_condition "$A" "$p" ZombiesDetected | jq -e '.status == "True" and .scope == "Node"'; }
    wait_for "$c: host zombies on $A: the zombies condition fires with scope Node" 60 node_scope
    cordoned_by() {
        [ "$(kubectl get node "$A" -o jsonpath='{.spec.unschedulable}')" = true ] &&
            [ "$(kubectl get node "$A" -o jsonpath='{.metadata.annotations.nodemedic\.io/cordoned-by}')" = "$p" ]
    }
    wait_for "$c: the node-wide problem cordons $A (cordoned-by=$p)" 60 cordoned_by
    drained() { episode_step "$A" "$p" zombies Drain | jq -e '.phase == "Done"'; }
    wait_for "$c: and drains it (Drain Done after the cooldown)" 60 drained
    host_zombies "$A" stop
    wait_for "$c: the host zombies gone, $A is uncordoned after the healthy cooldown" 90 not_cordoned "$A"
    delete_policy "$p" "$c"
    kubectl delete namespace culprit --wait=false >/dev/null
    stage_done
}

# ---------------------------------------------------------------------------
scenario_agent_restart() {
    stage "agent-restart"
    local c="agent-restart" pod old_pod pid
    kubectl delete namespace restart --ignore-not-found --timeout=90s >/dev/null
    kubectl create namespace restart >/dev/null
    zombie_pod restart zombie-factory "$B" | kubectl apply -f - >/dev/null
    wait_for "$c: the zombie factory runs on $B" 60 \
        sh -c "kubectl -n restart get pod zombie-factory -o jsonpath='{.status.phase}' | grep -qx Running"
    kubectl apply -f - >/dev/null <<EOF
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: e2e-restart}
spec:
  mode: DryRun
  nodeSelector: {matchLabels: {kubernetes.io/hostname: $B}}
  detectors:
    zombies: {threshold: 100000, perParentThreshold: 10, minAge: 0s, for: 4s}
  actions:
    zombies:
      - {action: SignalParent, signal: SIGKILL}
  safety: {maxUnhealthy: 1, cooldown: 5s}
EOF
    planned() { step_record "$B" e2e-restart SignalParent | jq -e '.phase == "Planned"'; }
    wait_for "$c: DryRun plans the SignalParent for the zombie parent on $B" 90 planned || { stage_done; return; }
    # freeze B's agent (by pid): it can neither see nor execute the request
    old_pod="$(agent_pod "$B")"
    pid="$(container_pid "$B" "$old_pod")" || { fail "$c: no container pid for $old_pod on $B"; stage_done; return; }
    "$engine" exec "$B" kill -STOP "$pid"
    if "$engine" exec "$B" grep -q '^State:.*T (stopped)' "/proc/$pid/status"; then
        ok "$c: the agent on $B ($old_pod, pid $pid in the node) is frozen"
    else
        fail "$c: the agent on $B (pid $pid) is not stopped: $("$engine" exec "$B" grep State "/proc/$pid/status" 2>&1)"
    fi
    kubectl patch nhp e2e-restart --type merge -p '{"spec":{"mode":"Enforce"}}' >/dev/null
    local id=""
    requested() {
        id="$(kubectl get nhr "$B" -o json | jq -r '[.spec.actionRequests[]? | select(.action == "SignalParent")] | first | .id // empty')"
        [ -n "$id" ]
    }
    wait_for "$c: the operator writes the SignalParent request into $B's report" 25 requested || { "$engine" exec "$B" kill -CONT "$pid" || true; stage_done; return; }
    requested || true
    local results
    results="$(kubectl get nhr "$B" -o json | jq --arg id "$id" '[.status.actionResults[]? | select(.id == $id)] | length')"
    [ "$results" = 0 ] && ok "$c: request $id is pending (no result while the agent is frozen)" ||
        fail "$c: the frozen agent has $results results for $id"
    # the agent pod goes away (SIGKILL reaches a stopped process) and comes back
    kubectl -n "$ns" delete pod "$old_pod" --grace-period=1 --wait=true --timeout=60s >/dev/null ||
        fail "$c: the frozen agent pod $old_pod was not deleted within 60 s"
    new_agent() {
        pod="$(agent_pod "$B")"
        [ -n "$pod" ] && [ "$pod" != "$old_pod" ] &&
            [ "$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.status.containerStatuses[0].ready}')" = true ]
    }
    wait_for "$c: a new agent pod is Ready on $B" 90 new_agent
    final() {
        kubectl get nhr "$B" -o json | jq -e --arg id "$id" \
            '[.status.actionResults[]? | select(.id == $id) | select(.outcome == "Signalled" or (.outcome == "Refused" and .reason == "Expired"))] | length > 0'
    }
    wait_for "$c: the new agent executes request $id or refuses it as expired (after the old agent's node Lease expires)" 90 final
    sleep 10 # five more scans: a second execution would show by now
    local outcomes ended
    outcomes="$(kubectl get nhr "$B" -o json | jq -c --arg id "$id" '[.status.actionResults[]? | select(.id == $id) | {outcome, reason}]')"
    ended="$(kubectl -n restart logs zombie-factory | grep -c 'zombie parent .* ended' || true)"
    if [ "$(echo "$outcomes" | jq length)" = 1 ] && { [ "$ended" = 1 ] || echo "$outcomes" | jq -e '.[0].reason == "Expired"' >/dev/null; }; then
        ok "$c: request $id handled once: $outcomes, the zombie parent ended $ended time(s)"
    else
        fail "$c: want exactly one result for request $id and the parent ended once; results: $outcomes, parent ended $ended time(s)"
    fi
    # The ledger's durable history: the step was carried out once (the
    # episode itself ends with the zombies, and its step records with it).
    local executed
    executed="$(kubectl get nrm "$B" -o json | jq -c '[.spec.history[]? | select(.policy == "e2e-restart" and .action == "SignalParent" and (.planned // false) == false)]')"
    [ "$(echo "$executed" | jq length)" = 1 ] &&
        ok "$c: the ledger's history has the SignalParent step carried out once ($(echo "$executed" | jq -c '.[0]'))" ||
        fail "$c: want one non-planned SignalParent entry for e2e-restart in $B's ledger history, have: $executed"
    delete_policy e2e-restart "$c"
    kubectl delete namespace restart --wait=false >/dev/null
    stage_done
}

# ---------------------------------------------------------------------------
scenario_agent_down() {
    stage "agent-down"
    local c="agent-down" pod pid
    kubectl apply -f - >/dev/null <<'EOF'
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: e2e-stale}
spec:
  mode: DryRun
  nodeSelector: {matchLabels: {nodemedic.io/e2e-pool: workers}}
  detectors:
    zombies: {threshold: 100000, perParentThreshold: 100000}
  actions:
    zombies: [{action: Cordon}]
  safety: {maxUnhealthy: 0}
EOF
    degraded_clear() {
        kubectl get nhp e2e-stale -o json | jq -e '.status.conditions[]? | select(.type == "Degraded" and .status == "False")'
    }
    wait_for "$c: with every agent up the policy is not Degraded" 60 degraded_clear
    pod="$(agent_pod "$B")"
    "$engine" exec "$B" systemctl stop kubelet
    local id
    id="$("$engine" exec "$B" crictl ps -q --label "io.kubernetes.pod.name=$pod" | head -n1)"
    if [ -n "$id" ] && "$engine" exec "$B" crictl stop --timeout 10 "$id" >/dev/null; then
        ok "$c: kubelet stopped on $B and the agent container ($pod) stopped"
    else
        fail "$c: could not stop the agent container of $pod on $B"
    fi
    local last
    last="$(kubectl get nhr "$B" -o jsonpath='{.status.lastScanTime}')"
    stale() {
        kubectl get nhp e2e-stale -o json | jq -e --arg n "$B" \
            '.status.conditions[]? | select(.type == "Degraded" and .status == "True" and .reason == "StaleReports" and (.message | contains($n)))'
    }
    wait_for "$c: the policy is Degraded (StaleReports) naming $B" 90 stale
    prom_alert "$c" NodemedicReportsStale --label policy=e2e-stale
    [ "$(kubectl get nhr "$B" -o jsonpath='{.status.lastScanTime}')" = "$last" ] &&
        ok "$c: $B's report did not move ($last)" || fail "$c: $B's report moved while its agent was stopped"
    kubectl get nhp e2e-stale -o json | jq -e \
        '.status.conditions[]? | select(.type == "StormActive" and .status == "True" and (.message | contains("1 with stale reports")))' >/dev/null &&
        ok "$c: the stale node counts toward the storm (StormActive with maxUnhealthy 0)" ||
        fail "$c: want StormActive=True counting 1 stale report, have: $(kubectl get nhp e2e-stale -o json | jq -c '.status.conditions[]? | select(.type == "StormActive")')"
    "$engine" exec "$B" systemctl start kubelet
    fresh() {
        [ "$(kubectl get nhr "$B" -o jsonpath='{.status.lastScanTime}')" != "$last" ]
    }
    wait_for "$c: kubelet back, the agent on $B restarts and reports again" 120 fresh
    wait_for "$c: the policy's Degraded clears" 90 degraded_clear
    delete_policy e2e-stale "$c"
    stage_done
}

# ---------------------------------------------------------------------------
# Host processes (in a node container, outside any pod) with zombies: three
# parents of 10 each, so no parent is a culprit on its own (perParentThreshold
# 20) while the node has 30 (threshold 25): a node-wide problem.
host_zombies() { # NODE start|stop
    case "$2" in
        start)
            local i
            for i in 1 2 3; do
                # the children outlive the loop (a shell reaps finished jobs
                # between commands; forking 10 can take over a second on a
                # busy machine) and exit under the exec'd sleep, which never
                # waits: 10 zombies each
                "$engine" exec -d "$1" sh -c "for j in 1 2 3 4 5 6 7 8 9 10; do sleep 4 & done; echo \$\$ >/run/nm-host-zombies.$i; exec sleep 600"
            done
            ;;
        stop)
            "$engine" exec "$1" sh -c 'for f in /run/nm-host-zombies.*; do [ -e "$f" ] || continue; kill "$(cat "$f")" 2>/dev/null; rm -f "$f"; done' || true
            ;;
    esac
}
node_zombie_policy() { # NAME SELECTOR-YAML LADDER-YAML SAFETY-YAML
    cat <<EOF
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: $1}
spec:
  mode: Enforce
  nodeSelector: $2
  detectors:
    zombies: {threshold: 25, perParentThreshold: 20, minAge: 0s, for: 2s}
  actions:
    zombies: $3
  safety: $4
EOF
}

# ---------------------------------------------------------------------------
scenario_storm() {
    stage "storm"
    local c="storm" p=e2e-storm n
    kubectl delete nhp "$p" --ignore-not-found --timeout=90s >/dev/null
    host_zombies "$A" stop
    host_zombies "$B" stop
    # both workers sick at once, before the policy exists: both fire within
    # a scan of each other, and the Cordon comes due 6 s later
    host_zombies "$A" start
    host_zombies "$B" start
    node_zombie_policy "$p" '{matchLabels: {nodemedic.io/e2e-pool: workers}}' \
        '[{action: Cordon, after: 6s}]' '{maxUnhealthy: 1, cooldown: 5s, uncordonWhenHealthy: true}' |
        kubectl apply -f - >/dev/null
    mark_since "$p"
    both_fire() {
        local n
        for n in "$A" "$B"; do
            detector_condition "$n" "$p" ZombiesDetected | jq -e '.status == "True" and .scope == "Node"' >/dev/null || return 1
        done
    }
    wait_for "$c: host zombies on both workers: both zombies conditions fire (scope Node)" 60 both_fire || { host_zombies "$A" stop; host_zombies "$B" stop; delete_policy "$p" "$c"; stage_done; return; }
    storm_is() { # STATUS
        kubectl get nhp "$p" -o json | jq -e --arg s "$1" '.status.conditions[]? | select(.type == "StormActive" and .status == $s)'
    }
    wait_for "$c: StormActive=True (2 of 2 unhealthy, maxUnhealthy 1)" 60 storm_is True
    prom_alert "$c" NodemedicStormActive --label "policy=$p"
    held_storm() {
        local n
        for n in "$A" "$B"; do
            episode_step "$n" "$p" zombies Cordon | jq -e '.phase == "Held" and .reason == "StormActive"' >/dev/null || return 1
        done
    }
    wait_for "$c: the due Cordon is held StormActive in both ledgers" 60 held_storm
    sleep 4 # two more scans: nothing may move while the storm lasts
    local acted=""
    for n in "$A" "$B"; do
        not_cordoned "$n" || acted+=" $n cordoned;"
        [ "$(history_count "$n" "$p" zombies Cordon)" = 0 ] || acted+=" $n has a Cordon in its ledger history;"
    done
    [ -z "$acted" ] && ok "$c: no node-level action on either worker during the storm (nodes and ledgers)" ||
        fail "$c: want no node-level action while StormActive;$acted"
    kubectl get nhp "$p" -o json | jq -e '.status.conditions[] | select(.type == "StormActive") | .message | contains("2 of 2")' >/dev/null &&
        ok "$c: the storm message counts 2 of 2 selected nodes unhealthy" ||
        fail "$c: want the StormActive message to count 2 of 2, have: $(kubectl get nhp "$p" -o json | jq -c '.status.conditions[] | select(.type == "StormActive") | .message')"
    # B recovers: one unhealthy node is within maxUnhealthy; A's held Cordon runs
    host_zombies "$B" stop
    wait_for "$c: $B recovers, StormActive=False" 60 storm_is False
    cordoned_by_storm() {
        [ "$(kubectl get node "$A" -o jsonpath='{.spec.unschedulable}')" = true ] &&
            [ "$(kubectl get node "$A" -o jsonpath='{.metadata.annotations.nodemedic\.io/cordoned-by}')" = "$p" ]
    }
    wait_for "$c: the held Cordon runs once the storm ends: $A cordoned by $p" 60 cordoned_by_storm
    not_cordoned "$B" && [ "$(history_count "$B" "$p" zombies Cordon)" = 0 ] &&
        ok "$c: $B, which recovered, was never cordoned" || fail "$c: want $B never cordoned; history: $(history_count "$B" "$p" zombies Cordon) Cordon(s)"
    host_zombies "$A" stop
    wait_for "$c: $A healthy again, uncordoned after the cooldown" 90 not_cordoned "$A"
    delete_policy "$p" "$c"
    stage_done
}

# ---------------------------------------------------------------------------
scenario_drain_pdb() {
    stage "drain-pdb"
    local c="drain-pdb" p=e2e-drain-pdb uid
    kubectl delete nhp "$p" --ignore-not-found --timeout=90s >/dev/null
    host_zombies "$A" stop
    kubectl delete namespace guarded --ignore-not-found --timeout=90s >/dev/null
    kubectl create namespace guarded >/dev/null
    kubectl apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: guarded, namespace: guarded}
spec:
  replicas: 1
  selector: {matchLabels: {app: guarded}}
  template:
    metadata: {labels: {app: guarded}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {kubernetes.io/hostname: $A}
      containers:
        - name: guarded
          image: localhost/nodemedic-workload:$tag
          imagePullPolicy: Never
          args: [rename, guarded]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: guarded, namespace: guarded}
spec:
  maxUnavailable: 0
  selector: {matchLabels: {app: guarded}}
EOF
    kubectl -n guarded rollout status deploy/guarded --timeout=90s >/dev/null &&
        ok "$c: Deployment guarded (PDB maxUnavailable 0) runs on $A" || { fail "$c: Deployment guarded did not become available"; stage_done; return; }
    uid="$(kubectl -n guarded get pods -l app=guarded -o jsonpath='{.items[0].metadata.uid}')"
    host_zombies "$A" start
    node_zombie_policy "$p" "{matchLabels: {kubernetes.io/hostname: $A}}" \
        '[{action: Cordon}, {action: Drain}]' '{maxUnhealthy: 1, cooldown: 2s, uncordonWhenHealthy: true}' |
        kubectl apply -f - >/dev/null
    draining() { episode_step "$A" "$p" zombies Drain | jq -e '.phase == "Started"'; }
    wait_for "$c: host zombies on $A: cordoned, the Drain step starts" 60 draining || { host_zombies "$A" stop; delete_policy "$p" "$c"; stage_done; return; }
    local t0=$SECONDS
    drain_failed() { episode_step "$A" "$p" zombies Drain | jq -e '.phase == "Failed"'; }
    # the install sets --drain-timeout 20s (NODEMEDIC_DRAIN_TIMEOUT)
    wait_for "$c: the PDB holds the pod until the drain timeout: the Drain step ends Failed" 90 drain_failed
    local rec
    rec="$(episode_step "$A" "$p" zombies Drain)"
    echo "$rec" | jq -e '.reason == "Timeout" and .drain.remaining == 1 and .drain.evicted == 0' >/dev/null &&
        ok "$c: Failed (seen $((SECONDS - t0)) s after Started) with reason Timeout, 1 pod remaining ($(echo "$rec" | jq -c '{reason, drain, message}'))" ||
        fail "$c: want the Drain Failed with reason Timeout, evicted 0 and 1 remaining; the step record: $rec"
    # By the record's own times (the operator's clock): ended at the timeout,
    # not when a backed-off pass would have come (5 s: reconcile and pass).
    local took
    took="$(echo "$rec" | jq '(.since | fromdate) - (.startedAt | fromdate)' 2>/dev/null)"
    [ -n "$took" ] && [ "$took" -ge 20 ] && [ "$took" -le 25 ] &&
        ok "$c: the step ended ${took} s after it started (drain timeout 20 s)" ||
        fail "$c: want the Drain to end 20 to 25 s after it started (timeout 20 s); it ended after '${took}' s (since $(echo "$rec" | jq -r .since), startedAt $(echo "$rec" | jq -r .startedAt))"
    local now_uid phase
    now_uid="$(kubectl -n guarded get pods -l app=guarded -o jsonpath='{.items[0].metadata.uid}')"
    phase="$(kubectl -n guarded get pods -l app=guarded -o jsonpath='{.items[0].status.phase}')"
    [ "$now_uid" = "$uid" ] && [ "$phase" = Running ] &&
        ok "$c: the PDB-guarded pod still runs on $A (same uid)" ||
        fail "$c: want the guarded pod $uid still Running; have uid $now_uid, phase $phase"
    if kubectl get events -A -o json | jq -e --arg n "$A" --arg p "$p" \
        '[.items[] | select(.reason == "RemediationFailed" and .involvedObject.name == $n and (.message // .note // "" | contains($p)))] | length > 0' >/dev/null; then
        ok "$c: a RemediationFailed Event on $A"
    else
        fail "$c: no RemediationFailed Event on $A for $p"
    fi
    host_zombies "$A" stop
    wait_for "$c: $A healthy again, uncordoned after the cooldown" 90 not_cordoned "$A"
    delete_policy "$p" "$c"
    kubectl delete namespace guarded --wait=false >/dev/null
    stage_done
}

# ---------------------------------------------------------------------------
# A three-step ladder on worker A (a node-wide zombie problem): Event at
# once, Taint after 8 s, Cordon after 16 s. DISRUPT runs between the Taint and
# the Cordon; then every step must have run exactly once.
ladder_steps=(Event Taint Cordon)
step_event_reason() {
    case "$1" in Event) echo ZombiesDetected ;; Taint) echo NodeTainted ;; Cordon) echo NodeCordoned ;; esac
}
events_count() { # NODE POLICY REASON -> occurrences (series counted)
    kubectl get events -A -o json | jq --arg n "$1" --arg p "$2" --arg r "$3" \
        --arg since "$since" '[.items[] | select(.reason == $r and .involvedObject.kind == "Node" and .involvedObject.name == $n and ((.message // "") | test("^policy " + $p + "[ :]")) and ((.lastTimestamp // .eventTime // "") >= $since)) | (.series.count // .count // 1)] | add // 0'
}
tainted_by() { # NODE POLICY
    kubectl get node "$1" -o json | jq -e --arg p "$2" '[.spec.taints[]? | select(.key == "nodemedic.io/e2e-ladder")] | length == 1' >/dev/null &&
        kubectl get node "$1" -o jsonpath='{.metadata.annotations.nodemedic\.io/tainted-by}' | grep -q "$2"
}
untainted() { # NODE
    kubectl get node "$1" -o json | jq -e '[.spec.taints[]? | select(.key == "nodemedic.io/e2e-ladder")] | length == 0'
}
ladder_once() { # CHECK-NAME POLICY DISRUPT-FUNCTION
    local c=$1 p=$2 disrupt=$3
    kubectl delete nhp "$p" --ignore-not-found --timeout=90s >/dev/null
    host_zombies "$A" stop
    host_zombies "$A" start
    node_zombie_policy "$p" "{matchLabels: {kubernetes.io/hostname: $A}}" \
        '[{action: Event}, {action: Taint, after: 8s, taint: {key: nodemedic.io/e2e-ladder, effect: NoSchedule}}, {action: Cordon, after: 16s}]' \
        '{maxUnhealthy: 1, cooldown: 2s, uncordonWhenHealthy: true}' | kubectl apply -f - >/dev/null
    mark_since "$p"
    wait_for "$c: host zombies on $A: the ladder starts, $A tainted by $p (step 2 of 3)" 90 tainted_by "$A" "$p" || { host_zombies "$A" stop; delete_policy "$p" "$c"; return 1; }
    if [ "$(kubectl get node "$A" -o jsonpath='{.spec.unschedulable}')" = true ]; then
        fail "$c: $A is already cordoned: the disruption is not between the Taint and the Cordon (slow reconcile?)"
    fi
    "$disrupt" || true
    cordoned_by_p() {
        [ "$(kubectl get node "$A" -o jsonpath='{.spec.unschedulable}')" = true ] &&
            kubectl get node "$A" -o jsonpath='{.metadata.annotations.nodemedic\.io/cordoned-by}' | grep -q "$p"
    }
    wait_for "$c: the ladder goes on after it: $A cordoned by $p (step 3 of 3)" 120 cordoned_by_p
    sleep 6 # three more scans, and reconciles: a repeated step would show by now
    local s h e counts="" bad=""
    for s in "${ladder_steps[@]}"; do
        h="$(history_count "$A" "$p" zombies "$s")"
        e="$(events_count "$A" "$p" "$(step_event_reason "$s")")"
        counts+=" $s: ledger $h, Events $e;"
        [ "$h" = 1 ] && [ "$e" = 1 ] || bad=1
    done
    echo "     per-step counts:$counts"
    [ -z "$bad" ] && ok "$c: every step of the ladder ran exactly once (ledger history and Events):$counts" ||
        fail "$c: want each of ${ladder_steps[*]} exactly once in $A's ledger history and in the Events; have:$counts"
    host_zombies "$A" stop
    healthy_again() { not_cordoned "$A" && untainted "$A"; }
    wait_for "$c: $A healthy again: uncordoned and untainted after the cooldown" 90 healthy_again
    delete_policy "$p" "$c"
}

# ---------------------------------------------------------------------------
lease_holder() { kubectl -n "$ns" get lease nodemedic-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
lease_seconds=8 # install: operator.leaderElection.leaseDuration
kill_leader() {
    local c=failover old new t0 took
    old="$(lease_holder)"
    if [ -z "$old" ] || ! kubectl -n "$ns" get pod "$old" >/dev/null 2>&1; then
        fail "$c: the Lease names no running operator pod (holder '$old')"
        return 1
    fi
    t0=$SECONDS
    kubectl -n "$ns" delete pod "$old" --wait=false >/dev/null
    ok "$c: the leading operator pod $old deleted between the Taint and the Cordon"
    new_leader() { new="$(lease_holder)"; [ -n "$new" ] && [ "$new" != "$old" ]; }
    if wait_for "$c: another replica holds the Lease" 60 new_leader; then
        new_leader || true
        took=$((SECONDS - t0))
        # lease duration, plus up to 1 s of the lease manager's back-off and 1 s of polling
        [ "$took" -le $((lease_seconds + 2)) ] &&
            ok "$c: $new took over ${took} s after the deletion (lease duration ${lease_seconds} s)" ||
            fail "$c: want the standby to take over within the lease duration (${lease_seconds} s + 2 s); $new took ${took} s"
    fi
}
scenario_failover() {
    stage "failover"
    ladder_once failover e2e-failover kill_leader || true
    local ready
    wait_for "failover: both operator replicas Ready again" 90 \
        sh -c "[ \"\$(kubectl -n $ns get deploy -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].status.readyReplicas}')\" = 2 ]"
    stage_done
}

# ---------------------------------------------------------------------------
agent_scans() { # NODE AGENT-POD-IP -> nodemedic_agent_scans_total, read from inside the node (no API server needed)
    "$engine" exec "$1" curl -s --max-time 3 "http://$2:9470/metrics" | awk '$1 == "nodemedic_agent_scans_total" {print $2}'
}
restart_apiserver() {
    local c=apiserver cp id ip s0 s1 t0
    cp="$(kubectl get nodes -l node-role.kubernetes.io/control-plane -o jsonpath='{.items[0].metadata.name}')"
    ip="$(kubectl -n "$ns" get pod "$(agent_pod "$A")" -o jsonpath='{.status.podIP}')"
    s0="$(agent_scans "$A" "$ip")"
    id="$("$engine" exec "$cp" crictl ps -q --name kube-apiserver | head -n1)"
    t0=$SECONDS
    if [ -n "$id" ] && "$engine" exec "$cp" crictl stop --timeout 5 "$id" >/dev/null; then
        ok "$c: kube-apiserver stopped on $cp (container ${id:0:13}) between the Taint and the Cordon"
    else
        fail "$c: could not stop kube-apiserver on $cp"
        return 1
    fi
    sleep 6
    local down=yes
    kubectl get --raw /readyz >/dev/null 2>&1 && down=no
    s1="$(agent_scans "$A" "$ip")"
    [ -n "$s0" ] && [ -n "$s1" ] && [ "$s1" -ge $((s0 + 2)) ] &&
        ok "$c: the agent on $A keeps scanning ($s0 -> $s1 scans in 6 s; API server down then: $down)" ||
        fail "$c: want the agent on $A to keep scanning while the API server is away; scans $s0 -> $s1"
    api_back() { kubectl get --raw /readyz; }
    wait_for "$c: kubelet restarts kube-apiserver, /readyz answers" 180 api_back &&
        echo "     the API server was away about $((SECONDS - t0)) s"
    report_fresh() { # the agent catches up: a report scanned after the API server came back
        local last
        last="$(kubectl get nhr "$A" -o jsonpath='{.status.lastScanTime}')" || return 1
        [ $(($(date -u +%s) - $(date -u -d "$last" +%s))) -le 6 ]
    }
    wait_for "$c: the agent on $A catches up (its report scanned within the last 6 s)" 60 report_fresh
}
scenario_apiserver() {
    stage "apiserver"
    ladder_once apiserver e2e-apiserver restart_apiserver || true
    stage_done
}

# ---------------------------------------------------------------------------
# upgrade: from the chart (and the images) of the commit before the newest
# change to the CRDs, to this tree's, the way docs/install.md says, in the
# middle of a ladder. The previous tree is exported with `git archive` and
# its images built by its own images.sh into a cache outside the clone
# (${NODEMEDIC_UPGRADE_CACHE:-~/.cache/nodemedic/upgrade-from}/<commit>), so
# only the first run pays for that build.
upgrade_from=""
prepare_previous_release() {
    local c=upgrade crd_commit cache
    crd_commit="$(git -C "$repo" log -n1 --format=%H -- charts/nodemedic/crds)"
    upgrade_from="$(git -C "$repo" rev-parse "$crd_commit^")"
    cache="${NODEMEDIC_UPGRADE_CACHE:-$HOME/.cache/nodemedic/upgrade-from}/$upgrade_from"
    prev_src="$cache/src"
    echo "     upgrading from ${upgrade_from:0:12} (the parent of ${crd_commit:0:12}, the newest CRD change: $(git -C "$repo" log -n1 --format=%s "$crd_commit" | cut -c1-70))"
    if [ ! -s "$cache/images/nodemedic.tar" ]; then
        rm -rf "$prev_src" && mkdir -p "$prev_src" "$cache/images"
        git -C "$repo" archive "$upgrade_from" | tar -x -C "$prev_src" || return 1
        NODEMEDIC_STATIC_TARGET="$cache/target" "$prev_src/tests/kind/images.sh" --tag prev --out "$cache/images" >/dev/null || return 1
    fi
    "$repo/tests/kind/cluster.sh" load "$cache/images/nodemedic.tar" >/dev/null || return 1
    ok "$c: images of ${upgrade_from:0:12} built (cached in $cache) and loaded"
}
install_previous_release() {
    local c=upgrade prev_values="$images_out/values-prev.yaml"
    sed "s/tag: \"$tag\"/tag: \"prev\"/" "$values" >"$prev_values"
    helm uninstall "$release" -n "$ns" --wait --timeout 3m >/dev/null || return 1
    # The previous CRDs too: the cluster as the previous release left it.
    kubectl apply --server-side --force-conflicts -f "$prev_src/charts/nodemedic/crds/" >/dev/null || return 1
    helm install "$release" "$prev_src/charts/nodemedic" -n "$ns" -f "$prev_values" --wait --timeout 5m >/dev/null || return 1
    wait_for "$c: the previous release runs: agents Ready on 3 nodes (image prev)" 120 \
        sh -c "[ \"\$(kubectl -n $ns get ds -l app.kubernetes.io/component=agent -o jsonpath='{.items[0].status.numberReady}')\" = 3 ]"
}
upgrade_release() { # the disruption of ladder_once: docs/install.md "Upgrade", word for word but for the image tag
    local c=upgrade t0=$SECONDS
    if kubectl apply --server-side --force-conflicts -f "$repo/charts/nodemedic/crds/" >/dev/null &&
        helm upgrade "$release" "$repo/charts/nodemedic" -n "$ns" --reset-then-reuse-values \
            --set image.tag="$tag" --wait --timeout 5m >/dev/null; then
        ok "$c: CRDs applied and helm upgrade to this tree's chart between the Taint and the Cordon ($((SECONDS - t0)) s)"
    else
        fail "$c: the upgrade as docs/install.md describes it failed"
        return 1
    fi
    local images
    images="$(kubectl -n "$ns" get pods -l app.kubernetes.io/instance="$release" -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
    wait_for "$c: every agent and operator pod runs this tree's image ($tag)" 120 \
        sh -c "! kubectl -n $ns get pods -l app.kubernetes.io/instance=$release -o jsonpath='{range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}' | grep -qv ':$tag\$'"
    echo "     images after the upgrade: $images"
}
scenario_upgrade() {
    stage "upgrade"
    if prepare_previous_release && install_previous_release; then
        ladder_once upgrade e2e-upgrade upgrade_release || true
        local ready
        ready="$(kubectl get nhp -o json | jq -r '[.items[] | select(.metadata.name | startswith("e2e-")) ] | length')"
        echo "     e2e policies left after the scenario: $ready"
    else
        fail "upgrade: could not set up the previous release (${upgrade_from:0:12}); the current release is put back"
        helm uninstall "$release" -n "$ns" --wait >/dev/null 2>&1 || true
        kubectl apply --server-side --force-conflicts -f "$repo/charts/nodemedic/crds/" >/dev/null
        helm install "$release" "$repo/charts/nodemedic" -n "$ns" -f "$values" --wait --timeout 5m >/dev/null || true
    fi
    stage_done
}

for s in "${scenarios[@]}"; do
    case "$s" in
        drain) scenario_drain ;;
        culprit) scenario_culprit ;;
        agent-restart) scenario_agent_restart ;;
        agent-down) scenario_agent_down ;;
        storm) scenario_storm ;;
        drain-pdb) scenario_drain_pdb ;;
        failover) scenario_failover ;;
        apiserver) scenario_apiserver ;;
        upgrade) scenario_upgrade ;;
    esac
done

if [ -n "$prom_addr" ]; then
    stage "dashboard: every panel's query answers with series"
    # The ETA panels need something running out: on $A a pod leaking fds
    # (5 a second) and a zombie storm building up (2 a second), under a
    # DryRun policy that fits fd growth over 1 minute, with the agents
    # fitting pid counts over 1 minute (agent.pidsTrendWindow, set here by
    # helm upgrade: an ETA once the samples span half the window).
    # No scenario's policy may act on the storm: they are done.
    kubectl get nhp -o name | { grep '/e2e-' || true; } | xargs -r kubectl delete --timeout=90s >/dev/null
    kubectl delete namespace dashboard --ignore-not-found --timeout=90s >/dev/null
    kubectl create namespace dashboard >/dev/null
    if helm upgrade "$release" "$repo/charts/nodemedic" -n "$ns" --reuse-values \
        --set agent.pidsTrendWindow=1m --wait --timeout 3m >/dev/null; then
        ok "dashboard: helm upgrade --set agent.pidsTrendWindow=1m"
    else
        fail "dashboard: helm upgrade --set agent.pidsTrendWindow=1m"
    fi
    kubectl apply -f - >/dev/null <<EOF
apiVersion: nodemedic.io/v1alpha1
kind: NodeHealthPolicy
metadata: {name: e2e-dashboard}
spec:
  mode: DryRun
  nodeSelector: {matchLabels: {kubernetes.io/hostname: $A}}
  detectors:
    fdLeak: {usageRatio: 0.9, minOpenFds: 100, growth: {minFdsPerMinute: 100000, window: 1m}, for: 2s}
---
apiVersion: v1
kind: Pod
metadata: {name: fdleak, namespace: dashboard}
spec:
  nodeName: $A
  terminationGracePeriodSeconds: 1
  containers:
    - name: leak
      image: localhost/nodemedic-workload:$tag
      imagePullPolicy: Never
      args: [hold-fds, "100", --soft-limit, "8000", --leak-per-second, "5"]
---
apiVersion: v1
kind: Pod
metadata: {name: zombie-storm, namespace: dashboard}
spec:
  nodeName: $A
  terminationGracePeriodSeconds: 1
  containers:
    - name: storm
      image: localhost/nodemedic-workload:$tag
      imagePullPolicy: Never
      args: [zombies, --count, "100000", --per-second, "2"]
EOF
    agent_a="$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=agent --field-selector spec.nodeName="$A" -o jsonpath='{.items[0].metadata.name}')"
    agent_port="$(kubectl -n "$ns" get pod "$agent_a" -o jsonpath='{.spec.containers[0].ports[?(@.name=="admin")].containerPort}')"
    etas_exported() {
        local m
        m="$(kubectl get --raw "/api/v1/namespaces/$ns/pods/$agent_a:$agent_port/proxy/metrics")" &&
            echo "$m" | grep -q '^nodemedic_agent_fd_exhaustion_eta_seconds{.*pod_name="fdleak"' &&
            echo "$m" | grep -q '^nodemedic_agent_pod_pids_exhaustion_eta_seconds{.*pod_name="zombie-storm"' &&
            echo "$m" | grep -q '^nodemedic_agent_node_pids_exhaustion_eta_seconds'
    }
    if ! wait_for "dashboard: $A's agent exports the fd ETA of the leaking pod, the pids ETA of the zombie storm's pod and the node's" 150 etas_exported; then
        kubectl get --raw "/api/v1/namespaces/$ns/pods/$agent_a:$agent_port/proxy/metrics" | grep -E 'eta_seconds|pids' | sed 's/^/     /'
    fi
    # A pause, so that the pause panels have something to show: a node
    # paused for three scrapes (by annotation, as `kubectl nodemedic pause`
    # writes it), then resumed.
    kubectl annotate node "$A" nodemedic.io/paused="e2e: the dashboard's pause panels" --overwrite >/dev/null
    sleep 15
    kubectl annotate node "$A" nodemedic.io/paused- >/dev/null
    # What the binaries export: one agent's and one operator's /metrics,
    # through the API server, and what their sources register (a family
    # with no sample yet is left out of /metrics).
    expositions=()
    for component in agent operator; do
        pod="$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=$component -o jsonpath='{.items[0].metadata.name}')"
        port="$(kubectl -n "$ns" get pod "$pod" -o jsonpath='{.spec.containers[0].ports[?(@.name=="admin")].containerPort}')"
        kubectl get --raw "/api/v1/namespaces/$ns/pods/$pod:$port/proxy/metrics" >"$prom_dir/$component.metrics" &&
            expositions+=(--exposition "$prom_dir/$component.metrics")
    done
    if out="$("$promcheck" dashboard --prometheus "$prom_addr" --dashboard "$prom_dir/dashboard.yaml" \
        --namespace "$ns" --start "$prom_start" "${expositions[@]}" \
        --registered-in "$repo/node-agent/src/admin.rs" --registered-in "$repo/operator/src/metrics.rs" 2>&1)"; then
        echo "$out" | sed 's/^/     /'
        ok "dashboard: $(echo "$out" | tail -n1)"
    else
        echo "$out" | sed 's/^/     /'
        fail "dashboard: want every query of the chart's dashboard to answer, with series or reading only metrics the binaries export (see EMPTY/ERROR above)"
    fi
    kubectl delete nhp e2e-dashboard --ignore-not-found >/dev/null
    kubectl delete namespace dashboard --ignore-not-found --wait=false >/dev/null
    stage_done
fi

stage "teardown"
trap - EXIT
stop_prometheus
if [ "$failed" != 0 ]; then diagnose; fi
rm -rf "$images_out"
if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    echo "keeping kind cluster $KIND_CLUSTER_NAME (KIND_CLUSTER_NAME=$KIND_CLUSTER_NAME tests/kind/cluster.sh down)"
else
    "$repo/tests/kind/cluster.sh" down
    "$repo/tests/kind/cluster.sh" check-host && ok "teardown: the host is as before" || fail "teardown: the host is not as before"
fi
stage_done

echo
echo "== timings"
printf '  %s\n' "${timings[@]}"
printf '  %-32s %4ss\n' "total" "$((SECONDS - t_all))"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
