#!/usr/bin/env bash
# Every cargo test of the workspace (`cargo test --workspace --all-targets`),
# built once and run in two lanes at the same time.
#
# Why two lanes: most of the run is the real-control-plane tests waiting on
# their own etcd and kube-apiserver, one test binary after another; two
# lanes use the second core. Each test binary starts its own control plane
# on free loopback ports, so the lanes share nothing but the machine.
#
#   host      every package but the operator: the agent's real-host tests and
#             benches (kept in one lane: they scan the whole machine, so they
#             must not see another lane's zombies or fd leaks), the CRDs, the
#             kubectl plugin, the testkit, and the tests crate (API server,
#             chart, alerts);
#   operator  the operator's tests and bench (synthetic reports against a
#             real API server; no host process of their own is scanned).
#
# Both lanes always run to the end (--no-fail-fast); the exit status is
# non-zero when either failed. NODEMEDIC_TEST_LANES=1 runs them one after
# the other instead (e.g. to read one uninterleaved log).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo="${CARGO:-cargo}"

host=(--workspace --exclude nodemedic-operator --all-targets --no-fail-fast)
operator=(-p nodemedic-operator --all-targets --no-fail-fast)

# One build for both: the same selection as a plain `cargo test --workspace`
# (so the features, and the artefacts, are the ones it would use).
"$cargo" test --workspace --all-targets --no-run || exit 1

status_dir="$(mktemp -d)"
trap 'rm -rf "$status_dir"' EXIT

# Runs one lane, each line of its output prefixed with the lane's name.
lane() {
    local name="$1"
    shift
    local started=$SECONDS
    { "$cargo" test "$@" 2>&1; echo $? >"$status_dir/$name"; } |
        tee "$status_dir/$name.log" | sed -u "s/^/[$name] /"
    echo "[$name] lane finished in $((SECONDS - started)) s with status $(cat "$status_dir/$name")"
}

if [ "${NODEMEDIC_TEST_LANES:-2}" = 1 ]; then
    lane host "${host[@]}"
    lane operator "${operator[@]}"
else
    lane host "${host[@]}" &
    lane operator "${operator[@]}" &
    wait
fi

# Each failed test's message again, last: CI may keep only the head and the
# tail of a long log, and the two lanes' lines interleave.
failures() {
    awk '/^---- .* stdout ----$/ { print }
         /^thread .* panicked at / { on = 1; n = 0 }
         on && /^(stack backtrace:|note: run with)/ { on = 0 }
         on && n < 40 { print; n++ }
         /^error: test failed, to rerun pass/ { print }' "$status_dir/$1.log"
}

failed=0
for name in host operator; do
    rc="$(cat "$status_dir/$name" 2>/dev/null || echo missing)"
    if [ "$rc" != 0 ]; then
        echo "cargo tests: what failed in the $name lane (from its log):" >&2
        failures "$name" | sed "s/^/[$name] /" >&2
        echo "cargo tests: the $name lane failed (status $rc); its failures are the lines prefixed [$name] above" >&2
        failed=1
    fi
done
exit "$failed"
