#!/usr/bin/env bash
# Pod networking across the nodes of a running kind cluster of the tier (one
# with NODEMEDIC_KIND_WORKERS=2 or more): the check that runs before any
# multi-node scenario, and fails loudly.
#
#   tests/kind/netcheck.sh     # against the cluster named by KIND_CLUSTER_NAME
#
# On two workers A and B, a TCP echo server pod each (static busybox,
# `nc -ll`, answering "pong <node>") and a client pod each, then from each
# client:
#   net: pod-to-pod A->B       the server pod on the other worker, by pod IP
#   net: pod-to-service A->B   a ClusterIP Service whose only endpoint is on
#                              the other worker (kube-proxy DNAT + route)
#   net: dns A                 the Service's name through CoreDNS (the DNS
#                              Service, its pods wherever they run)
#   net: pod-to-apiserver A    the `kubernetes` Service (the API server on
#                              the control plane node), the path every
#                              in-cluster client (agent, operator) takes
# and, in podman mode (routes set up by cluster.sh), that a pod's packet to
# an address outside the machine (192.0.2.1, TEST-NET-1) is rejected by the
# host rule that keeps pod traffic on the machine (its counter grows):
#   net: pods stay on the machine
# Prints "ok   net: ..." / "FAIL net: ..." per check, diagnostics (pods,
# endpoints, routes on every node, the host's rules) on failure, exit 1 on
# any failure. Removes its namespace on success.
# Environment: SMOKE_BUSYBOX (a statically linked busybox, default
# /bin/busybox from Debian's busybox-static), plus those of cluster.sh.
set -euo pipefail

# shellcheck source=tests/kind/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case "${1:-}" in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) kind_die "netcheck.sh: unknown argument $1 (see --help)" ;;
esac

cluster="$kind_dir/cluster.sh"
eval "$("$cluster" env)"
provider="$KIND_EXPERIMENTAL_PROVIDER"
kubectl get nodes >/dev/null 2>&1 || kind_die "netcheck.sh: cluster $KIND_CLUSTER_NAME does not answer (tests/kind/cluster.sh up first)"
mapfile -t workers < <(kubectl get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
[ "${#workers[@]}" -ge 2 ] ||
    kind_die "netcheck.sh: needs a cluster with two workers (NODEMEDIC_KIND_WORKERS=2 tests/kind/cluster.sh up); $KIND_CLUSTER_NAME has ${#workers[@]}"
a="${workers[0]}" b="${workers[1]}"

busybox="${SMOKE_BUSYBOX:-/bin/busybox}"
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
    kind_die "netcheck.sh: need a statically linked busybox at $busybox (apt-get install busybox-static, or set SMOKE_BUSYBOX)"
fi

failed=0
passed=0
ok() { echo "ok   net: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL net: $*"; failed=$((failed + 1)); }
ns=nodemedic-netcheck
t0=$SECONDS

diagnose() {
    echo "--- netcheck diagnostics ---"
    kubectl get nodes -o wide 2>&1 || true
    kubectl get pods -A -o wide 2>&1 || true
    kubectl -n "$ns" get svc,endpointslices -o wide 2>&1 || true
    kubectl -n "$ns" describe pods 2>&1 | tail -n 60 || true
    local n
    for n in $(kubectl get nodes -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
        echo "-- $n: routes, CNI config"
        "$provider" exec "$n" ip route 2>&1 || true
        "$provider" exec "$n" cat /etc/cni/net.d/10-nodemedic-bridge.conflist 2>&1 || true
    done
    iptables -w 5 -S FORWARD -v 2>&1 | head -n 20 || true
    iptables -w 5 -t nat -S POSTROUTING 2>&1 | head -n 20 || true
    echo "----------------------------"
}

# --- the image: static busybox, non-root
ref="localhost/nodemedic-netcheck:v1"
"$kind_dir/oci-image.sh" --name "$ref" --output "$kind_cache/netcheck/netcheck.tar" \
    "$busybox=/bin/busybox:0755" --symlink /bin/sh=busybox --add-user nonroot:65532:65532 \
    --user 65532:65532 --dir /tmp:1777 --entrypoint /bin/busybox --cmd sh >/dev/null
# Its output only when it fails: under `set -e` a silent failure here would
# end the check with no word of why.
if ! load_out="$("$cluster" load "$kind_cache/netcheck/netcheck.tar" 2>&1)"; then
    echo "netcheck: FAIL: could not load the netcheck image into the cluster:" >&2
    echo "$load_out" >&2
    exit 1
fi

# --- servers and clients pinned to the two workers
kubectl delete namespace "$ns" --ignore-not-found --timeout=60s >/dev/null
kubectl create namespace "$ns" >/dev/null
pods() {
    local node tag
    for tag in a b; do
        if [ "$tag" = a ]; then node="$a"; else node="$b"; fi
        cat <<EOF
---
apiVersion: v1
kind: Pod
metadata: {name: server-$tag, namespace: $ns, labels: {app: echo, side: "$tag"}}
spec:
  nodeName: $node
  terminationGracePeriodSeconds: 0
  containers:
    - name: server
      image: $ref
      imagePullPolicy: Never
      command: [/bin/busybox, nc, -ll, -p, "8080", -e, /bin/busybox, echo, pong $node]
      readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Pod
metadata: {name: client-$tag, namespace: $ns}
spec:
  nodeName: $node
  terminationGracePeriodSeconds: 0
  containers:
    - name: client
      image: $ref
      imagePullPolicy: Never
      command: [/bin/busybox, sleep, "3600"]
---
apiVersion: v1
kind: Service
metadata: {name: echo-$tag, namespace: $ns}
spec:
  selector: {app: echo, side: "$tag"}
  ports: [{port: 80, targetPort: 8080}]
EOF
    done
}
pods | kubectl apply -f - >/dev/null
if ! kubectl -n "$ns" wait --for=condition=Ready pod --all --timeout=90s >/dev/null; then
    fail "the echo servers and clients did not become Ready within 90 s"
    diagnose
    exit 1
fi

# in POD: CMD... retried for up to 20 s (endpoints and rules propagate)
probe() { # POD WANT CMD...
    local pod="$1" want="$2" out="" deadline=$((SECONDS + 20))
    shift 2
    while :; do
        out="$(kubectl -n "$ns" exec "$pod" -- "$@" 2>&1 </dev/null || true)"
        case "$out" in *"$want"*) echo "$out"; return 0 ;; esac
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 1
    done
    echo "$out"
    return 1
}

for pair in "a b" "b a"; do
    read -r from to <<<"$pair"
    if [ "$from" = a ]; then from_node="$a" to_node="$b"; else from_node="$b" to_node="$a"; fi
    to_ip="$(kubectl -n "$ns" get pod "server-$to" -o jsonpath='{.status.podIP}')"
    svc_ip="$(kubectl -n "$ns" get svc "echo-$to" -o jsonpath='{.spec.clusterIP}')"
    if out="$(probe "client-$from" "pong $to_node" /bin/busybox nc -w 3 "$to_ip" 8080)"; then
        ok "pod-to-pod $from_node -> $to_node ($to_ip)"
    else
        fail "pod-to-pod $from_node -> $to_node: nc $to_ip 8080 from client-$from answered '$out', want 'pong $to_node'"
    fi
    if out="$(probe "client-$from" "pong $to_node" /bin/busybox nc -w 3 "$svc_ip" 80)"; then
        ok "pod-to-service $from_node -> echo-$to ($svc_ip, its endpoint on $to_node)"
    else
        fail "pod-to-service $from_node -> echo-$to: nc $svc_ip 80 from client-$from answered '$out', want 'pong $to_node'"
    fi
    if out="$(probe "client-$from" "$svc_ip" /bin/busybox nslookup "echo-$to.$ns.svc.cluster.local")"; then
        ok "dns on $from_node: echo-$to.$ns.svc.cluster.local is $svc_ip"
    else
        fail "dns on $from_node: nslookup echo-$to.$ns.svc.cluster.local answered '$out', want $svc_ip"
    fi
    # The API server answers TLS; an open TCP connection is what is checked.
    if out="$(probe "client-$from" "open" /bin/busybox sh -c "/bin/busybox nc -w 3 kubernetes.default.svc.cluster.local 443 </dev/null && echo open")"; then
        ok "pod-to-apiserver on $from_node (kubernetes.default, on the control plane)"
    else
        fail "pod-to-apiserver on $from_node: '$out'"
    fi
done

# The host's rule for pod traffic leaving the machine: with the static CNI
# (this tier's node image) the rule for pod addresses; with kindnetd, which
# masquerades pods to their node's address, the node network's isolation rule.
if kind_static_cni "$provider"; then
    leave_rule="$kind_network: pods never leave the machine"
else
    leave_rule="$kind_network: nothing leaves the machine"
fi
leave_count() {
    iptables -w 5 -L FORWARD -v -x -n | awk -v c="$leave_rule" 'index($0, c) { print $1; found=1 } END { if (!found) print "missing" }'
}
before="$(leave_count)"
out="$(kubectl -n "$ns" exec client-a -- /bin/busybox nc -w 3 192.0.2.1 80 2>&1 </dev/null || true)"
after="$(leave_count)"
if [ "$before" != missing ] && [ "$after" -gt "$before" ] && [[ "$out" != *open* ]]; then
    ok "pods stay on the machine: a pod's packet to 192.0.2.1 was rejected by the host ($((after - before)) packets; nc: $out)"
else
    fail "pods stay on the machine: the host's reject rule counted $before -> $after packets for a pod's connection to 192.0.2.1 (nc: $out)"
fi

if [ "$failed" != 0 ]; then
    diagnose
    echo "netcheck: $passed passed, $failed failed ($((SECONDS - t0))s)"
    exit 1
fi
kubectl delete namespace "$ns" --timeout=90s >/dev/null || echo "netcheck: WARNING: namespace $ns not gone within 90 s" >&2
echo "netcheck: $passed passed, 0 failed ($((SECONDS - t0))s)"
