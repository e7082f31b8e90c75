#!/usr/bin/env bash
# Provision Prometheus's `promtool` and `prometheus` for the alert tests
# (`tests/tests/alerts.rs`): rule unit tests (`promtool test rules`) and rule
# checks (`promtool check rules`) of the chart's PrometheusRule and dashboard.
#
# - If NODEMEDIC_PROMETHEUS_BIN_DIR is set and holds promtool and prometheus,
#   nothing is downloaded: that folder is used as is.
# - Otherwise Debian's `prometheus` package (pinned below) is fetched with
#   `apt-get download` (the archive's signed index vouches for the file; no
#   install, no root needed when apt's lists are present) and unpacked with
#   `dpkg-deb -x` into
#   ${NODEMEDIC_PROMETHEUS_CACHE:-$HOME/.cache/nodemedic/prometheus}/<version>/.
#   A warm run only checks that folder, so it takes milliseconds.
#   When apt has no list of the package and this runs as root (CI), it runs
#   `apt-get update` once and retries.
#
# The last line printed on stdout is always
#   export NODEMEDIC_PROMETHEUS_BIN_DIR=<dir>
# so callers can `eval "$(tests/prometheus/provision.sh --print-env)"`.
#
# Usage: tests/prometheus/provision.sh [--print-env] [--force]
#   --print-env     print only the export line (progress goes to stderr)
#   --force         download and unpack again
set -euo pipefail

# Upstream version (the cache folder) and the Debian package that carries it.
PROMETHEUS_VERSION=2.42.0
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+deb12u1

print_env_only=0
force=0
for arg in "$@"; do
    case "$arg" in
        --print-env) print_env_only=1 ;;
        --force) force=1 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "provision.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() {
    if [ "$print_env_only" = 1 ]; then
        echo "provision(prometheus): $*" >&2
    else
        echo "provision(prometheus): $*"
    fi
}

die() {
    {
        echo "tests/prometheus/provision.sh: $*"
        echo "  Fix: make apt able to fetch Debian's 'prometheus' package ($PROMETHEUS_DEB_VERSION,"
        echo "  bookworm main; as root: apt-get update), or set NODEMEDIC_PROMETHEUS_BIN_DIR to a"
        echo "  folder holding promtool and prometheus $PROMETHEUS_VERSION."
    } >&2
    exit 1
}

have_bins() {
    local dir="$1"
    [ -x "$dir/promtool" ] && [ -x "$dir/prometheus" ]
}

if [ -n "${NODEMEDIC_PROMETHEUS_BIN_DIR:-}" ]; then
    if have_bins "$NODEMEDIC_PROMETHEUS_BIN_DIR"; then
        log "using NODEMEDIC_PROMETHEUS_BIN_DIR=$NODEMEDIC_PROMETHEUS_BIN_DIR (nothing downloaded)"
        echo "export NODEMEDIC_PROMETHEUS_BIN_DIR=$NODEMEDIC_PROMETHEUS_BIN_DIR"
        exit 0
    fi
    die "NODEMEDIC_PROMETHEUS_BIN_DIR=$NODEMEDIC_PROMETHEUS_BIN_DIR lacks promtool or prometheus"
fi

cache_root="${NODEMEDIC_PROMETHEUS_CACHE:-$HOME/.cache/nodemedic/prometheus}"
dest="$cache_root/$PROMETHEUS_VERSION"
mkdir -p "$dest"

# One provisioning at a time per cache folder.
exec 9>"$dest/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

# Cached: both binaries there, from a package of the pinned upstream version,
# and promtool runs.
if [ "$force" = 0 ] && have_bins "$dest" && [ -s "$dest/.deb-version" ] \
    && "$dest/promtool" --version >/dev/null 2>&1; then
    log "promtool, prometheus: cached ($dest, Debian $(cat "$dest/.deb-version"))"
    echo "export NODEMEDIC_PROMETHEUS_BIN_DIR=$dest"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "'apt-get' is not available on this machine"
command -v dpkg-deb >/dev/null 2>&1 || die "'dpkg-deb' is not available on this machine"

start=$SECONDS
work="$(mktemp -d "$cache_root/.download.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# apt's download sandbox user must be able to write there.
chmod 0755 "$work"

# download SPEC: apt-get download into $work; progress to stderr.
download() {
    local sandbox=()
    # As root, apt drops to user _apt, which cannot write under /root.
    [ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
    (cd "$work" && apt-get download -q "${sandbox[@]}" "$1") >&2 2>&1
}

fetched=0
for attempt in 1 2; do
    if download "prometheus=$PROMETHEUS_DEB_VERSION"; then
        fetched=1
        break
    fi
    # The pinned build may have been superseded by a Debian stable update of
    # the same upstream version; that one is as good (checked below).
    if download prometheus; then
        fetched=1
        break
    fi
    if [ "$attempt" = 1 ] && [ "$(id -u)" = 0 ]; then
        log "apt cannot fetch 'prometheus'; running apt-get update once"
        apt-get update -q >&2 2>&1 || true
        continue
    fi
    break
done
[ "$fetched" = 1 ] || die "apt-get download prometheus failed"

deb="$(find "$work" -maxdepth 1 -name 'prometheus_*.deb' | head -n1)"
[ -n "$deb" ] || die "apt-get download left no prometheus_*.deb in $work"
deb_version="$(dpkg-deb -f "$deb" Version)"
case "$deb_version" in
    "$PROMETHEUS_VERSION"+*) ;;
    *) die "apt offers prometheus $deb_version, not upstream $PROMETHEUS_VERSION" ;;
esac
log "unpacking prometheus $deb_version ($(du -h "$deb" | cut -f1))"
dpkg-deb -x "$deb" "$work/root"
for bin in promtool prometheus; do
    [ -x "$work/root/usr/bin/$bin" ] || die "the package has no usr/bin/$bin"
    cp -f "$work/root/usr/bin/$bin" "$dest/.$bin.tmp"
    mv -f "$dest/.$bin.tmp" "$dest/$bin"
done
"$dest/promtool" --version >/dev/null 2>&1 || die "$dest/promtool does not run on this machine"
echo "$deb_version" >"$dest/.deb-version"
log "promtool, prometheus: provisioned in $((SECONDS - start))s into $dest"
if [ "$print_env_only" = 0 ]; then
    "$dest/promtool" --version 2>&1 | head -n1 | sed 's/^/provision(prometheus): /'
fi
echo "export NODEMEDIC_PROMETHEUS_BIN_DIR=$dest"
