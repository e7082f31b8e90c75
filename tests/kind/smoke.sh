#!/usr/bin/env bash
# Smoke test of the kind tier, end to end:
#   provision -> cluster up -> an image built from files with oci-image.sh
#   (static busybox, non-root user) loaded into the node -> a Pod with
#   imagePullPolicy: Never runs, prints, resolves a Service name through
#   CoreDNS -> a hostPID Pod sees the node's processes (kubelet, containerd)
#   -> cluster down -> the host is as before (no containers, volumes,
#   networks, chains left; sysctls restored).
#
#   tests/kind/smoke.sh            (or: make e2e-kind-smoke)
#
# Prints the time of each step and ends with 'N passed, N failed'.
# Environment: SMOKE_BUSYBOX (a statically linked busybox, default
# /bin/busybox from Debian's busybox-static), plus those of cluster.sh.
set -euo pipefail

# shellcheck source=tests/kind/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

passed=0
failed=0
ok() {
    echo "ok   $*"
    passed=$((passed + 1))
}
fail() {
    echo "FAIL $*"
    failed=$((failed + 1))
}
timings=()
timed() { # LABEL CMD...: run, record the duration
    local label="$1" t=$SECONDS rc=0
    shift
    "$@" || rc=$?
    timings+=("$(printf '%-28s %4ss' "$label" "$((SECONDS - t))")")
    return "$rc"
}
t_all=$SECONDS

busybox="${SMOKE_BUSYBOX:-/bin/busybox}"
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    echo "smoke.sh: need a statically linked busybox at $busybox (apt-get install busybox-static, or set SMOKE_BUSYBOX)" >&2
    exit 2
fi

cluster="$kind_dir/cluster.sh"
down_done=0
cleanup() {
    if [ "$down_done" = 0 ]; then
        "$cluster" down || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== provision"
timed "provision" "$kind_dir/provision.sh" >/dev/null

echo "== cluster up"
timed "cluster up" "$cluster" up >/dev/null
eval "$("$cluster" env)"
ok "cluster up: node Ready, CoreDNS running ($(kubectl get nodes -o jsonpath='{.items[0].status.nodeInfo.kubeletVersion}'))"

echo "== test image from files (oci-image.sh) and kind load"
img_dir="$kind_cache/smoke"
ref="localhost/nodemedic-smoke:v1"
timed "build image (oci-image.sh)" "$kind_dir/oci-image.sh" --name "$ref" --output "$img_dir/smoke.tar" \
    "$busybox=/bin/busybox:0755" --symlink /bin/sh=busybox --add-user nonroot:65532:65532 \
    --user 65532:65532 --dir /tmp:1777 --entrypoint /bin/busybox --cmd sh >/dev/null
timed "kind load image-archive" "$cluster" load "$img_dir/smoke.tar"
ok "image $ref loaded"

echo "== pod with imagePullPolicy: Never"
kubectl create namespace smoke >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: hello, namespace: smoke}
spec:
  restartPolicy: Never
  containers:
    - name: hello
      image: $ref
      imagePullPolicy: Never
      command: ["/bin/busybox", "sh", "-c"]
      args:
        - echo "hello from nodemedic smoke as \$(/bin/busybox id -u)";
          /bin/busybox nslookup kubernetes.default.svc.cluster.local && echo DNS-OK
---
apiVersion: v1
kind: Pod
metadata: {name: hostpid, namespace: smoke}
spec:
  hostPID: true
  restartPolicy: Never
  containers:
    - name: ps
      image: $ref
      imagePullPolicy: Never
      command: ["/bin/busybox", "sh", "-c", "cat /proc/[0-9]*/comm | sort -u"]
EOF
wait_done() { # POD
    local phase
    for _ in $(seq 1 90); do
        phase="$(kubectl -n smoke get pod "$1" -o jsonpath='{.status.phase}')"
        case "$phase" in Succeeded | Failed) echo "$phase"; return 0 ;; esac
        sleep 1
    done
    echo "${phase:-Unknown}"
}
t=$SECONDS
phase="$(wait_done hello)"
timings+=("$(printf '%-28s %4ss' "pod create -> completed" "$((SECONDS - t))")")
logs="$(kubectl -n smoke logs hello 2>&1 || true)"
if [ "$phase" = Succeeded ] && grep -q "hello from nodemedic smoke as 65532" <<<"$logs"; then
    ok "pod ran the loaded image as uid 65532 and printed"
else
    fail "pod hello: phase $phase, logs: $logs"
    kubectl -n smoke describe pod hello | tail -n 20 || true
fi
if grep -q DNS-OK <<<"$logs"; then
    ok "pod resolved kubernetes.default.svc.cluster.local through CoreDNS (service IP via kube-proxy)"
else
    fail "DNS from a pod: $logs"
fi
phase="$(wait_done hostpid)"
procs="$(kubectl -n smoke logs hostpid 2>&1 || true)"
if [ "$phase" = Succeeded ] && grep -qx kubelet <<<"$procs" && grep -qx containerd <<<"$procs"; then
    ok "hostPID pod sees the node's processes (kubelet, containerd, $(wc -l <<<"$procs") names)"
else
    fail "hostPID pod: phase $phase, saw: $(tr '\n' ' ' <<<"$procs")"
fi

echo "== cluster down"
down_done=1
timed "cluster down" "$cluster" down
if "$cluster" check-host; then
    ok "host clean after down (containers, volumes, networks, chains, sysctls)"
else
    fail "host not clean after down"
fi

echo "== timings"
printf '  %s\n' "${timings[@]}"
printf '  %-28s %4ss\n' "total" "$((SECONDS - t_all))"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
