# Supervisor for one nodemedic test control plane (run by the harness as
# `bash -c <this script> nodemedic-cp DIR KEEP ETCD_CMD... -- APISERVER_CMD...`).
#
# It starts etcd and kube-apiserver in the background, writes their pids to
# DIR/pids, then reads commands from its stdin until EOF. Only the harness
# (the test process) holds the write end of that pipe, so stdin reaches EOF
# when the harness asks to stop OR when the test process exits for any
# reason (normal exit, panic, abort, SIGKILL, or a signal to its whole
# process group such as `timeout` sends). Then it stops kube-apiserver and
# etcd by pid (SIGTERM, SIGKILL after a grace period) and removes DIR unless
# KEEP is 1. No process or temp dir outlives the test binary.
#
# Commands (one per line): `stop-apiserver`, `start-apiserver` (same
# arguments, same etcd; the new pid replaces the old in DIR/pids).
set -u
dir=$1
keep=$2
shift 2

etcd_cmd=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    etcd_cmd+=("$1")
    shift
done
shift
api_cmd=("$@")

# The children run in their own sessions: a signal to the test's process
# group (Ctrl-C, `timeout`, a CI runner's SIGTERM) reaches neither them nor,
# thanks to the traps below, this supervisor — which then sees EOF and
# stops them in order.
trap '' INT QUIT TERM HUP

setsid "${etcd_cmd[@]}" >"$dir/etcd.log" 2>&1 </dev/null &
etcd_pid=$!
start_api() {
    setsid "${api_cmd[@]}" >>"$dir/kube-apiserver.log" 2>&1 </dev/null &
    api_pid=$!
    echo "$etcd_pid $api_pid" >"$dir/pids.tmp" && mv "$dir/pids.tmp" "$dir/pids"
}
start_api

# running PID: exit status 0 while PID exists and is not a zombie.
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

stop() {
    local pid=$1 _
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        running "$pid" || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Serve commands until EOF.
while IFS= read -r line; do
    case "$line" in
        stop-apiserver) stop "$api_pid"; echo "stopped" >"$dir/apiserver.state" ;;
        start-apiserver) start_api; echo "started" >"$dir/apiserver.state" ;;
        *) ;;
    esac
done

stop "$api_pid"
stop "$etcd_pid"
if [ "$keep" = 1 ]; then
    echo "nodemedic-tests: kept control-plane dir $dir" >&2
else
    rm -rf "$dir"
fi
exit 0
