#!/usr/bin/env bash
# Build nodemedic's container images without Docker or a registry:
# statically linked binaries (glibc, crt-static; cargo profile `image`: the
# release profile without LTO, which builds twice as fast) in single-layer OCI
# archives made by tests/kind/oci-image.sh, loadable with
# `kind load image-archive`, `ctr -n k8s.io images import`, `podman load`.
#
#   tests/kind/images.sh [--tag TAG] [--out DIR] [--with-workload] [--build-only]
#
# --build-only compiles what the images hold and stops (no archive): `make
# test` runs it niced beside the cargo tests, so that the kind tier's own
# images.sh finds the binaries built.
#
# Images (one image holds both product binaries; the chart picks the
# command per component):
#   localhost/nodemedic:TAG           /usr/local/bin/nodemedic-agent,
#                                     /usr/local/bin/nodemedic-operator,
#                                     user 65532 (the agent's pod runs it as
#                                     uid 0 with three capabilities)
#   localhost/nodemedic-workload:TAG  (--with-workload; tests only) the
#                                     dev-only problem generator, whose
#                                     entrypoint is `nodemedic-workload zombies`,
#                                     and /usr/local/bin/nodemedic-vfork
#                                     (tests/kind/vfork-parents.c, `cc -static`:
#                                     parents blocked in vfork())
#
# Prints one line per image: `ARCHIVE REF sha256:DIGEST`. The Rust build goes
# to ${NODEMEDIC_STATIC_TARGET:-$HOME/.cache/nodemedic/static-target} (outside
# the clone, cached); archives to --out (default that dir's images/).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tag="dev"
out=""
with_workload=0
build_only=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --with-workload) with_workload=1; shift ;;
        --build-only) build_only=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "images.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

target_dir="${NODEMEDIC_STATIC_TARGET:-$HOME/.cache/nodemedic/static-target}"
out="${out:-$target_dir/images}"
triple="x86_64-unknown-linux-gnu"
case "$(uname -m)" in
    x86_64) ;;
    aarch64) triple="aarch64-unknown-linux-gnu" ;;
    *) echo "images.sh: unsupported architecture $(uname -m)" >&2; exit 2 ;;
esac

packages=(-p nodemedic-agent -p nodemedic-operator)
[ "$with_workload" = 1 ] && packages+=(-p nodemedic-testkit)
echo "images.sh: building static release binaries (${packages[*]}) in $target_dir" >&2
bin="$target_dir/$triple/image"
# Every checkout shares the target directory, so that dependencies are built
# once. But cargo names a workspace crate's artefacts without its path and
# judges them by mtime: after another checkout built them, an older checkout
# would take that checkout's build as its own. So when the last build here
# came from another checkout, the workspace's crates are cleaned first (they
# rebuild in a minute or two, as in any fresh clone). Two checkouts must not
# run this at the same time.
built_from="$target_dir/.nodemedic-built-from"
if [ "$(cat "$built_from" 2>/dev/null)" != "$repo" ]; then
    echo "images.sh: the last build in $target_dir came from another checkout; rebuilding this one's crates" >&2
    (cd "$repo" && CARGO_TARGET_DIR="$target_dir" cargo clean --profile image --target "$triple" \
        -p nodemedic-agent -p nodemedic-operator -p nodemedic-testkit -p nodemedic-crds >&2)
    rm -f "$bin/nodemedic-agent" "$bin/nodemedic-operator" "$bin/nodemedic-workload"
fi
echo "$repo" >"$built_from"
# --target makes RUSTFLAGS apply to the binaries only, not to build scripts
# and proc macros, which must stay dynamic.
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
    cargo build --profile image --locked --target "$triple" --bins "${packages[@]}" >&2)
for b in nodemedic-agent nodemedic-operator; do
    # A dynamic executable lists its libraries as "lib => path".
    if ldd "$bin/$b" 2>&1 | grep -q '=>'; then
        echo "images.sh: $bin/$b is dynamically linked; static linking failed" >&2
        exit 1
    fi
done

if [ "$with_workload" = 1 ] && { [ ! -x "$bin/nodemedic-vfork" ] || [ "$here/vfork-parents.c" -nt "$bin/nodemedic-vfork" ]; }; then
    # vfork() needs `unsafe`, which the workspace forbids: a small C helper.
    cc -static -Os -s -Wall -o "$bin/nodemedic-vfork" "$here/vfork-parents.c"
fi
[ "$build_only" = 1 ] && exit 0

mkdir -p "$out"
"$here/oci-image.sh" --name "localhost/nodemedic:$tag" --output "$out/nodemedic.tar" \
    "$bin/nodemedic-agent=/usr/local/bin/nodemedic-agent:0755" \
    "$bin/nodemedic-operator=/usr/local/bin/nodemedic-operator:0755" \
    --add-user nonroot:65532:65532 --user 65532:65532 \
    --label org.opencontainers.image.source=https://github.com/nodemedic/nodemedic \
    --label org.opencontainers.image.title=nodemedic \
    --entrypoint /usr/local/bin/nodemedic-operator \
    | sed "s|^|$out/nodemedic.tar |"
if [ "$with_workload" = 1 ]; then
    "$here/oci-image.sh" --name "localhost/nodemedic-workload:$tag" \
        --output "$out/nodemedic-workload.tar" \
        "$bin/nodemedic-workload=/usr/local/bin/nodemedic-workload:0755" \
        "$bin/nodemedic-vfork=/usr/local/bin/nodemedic-vfork:0755" \
        --entrypoint /usr/local/bin/nodemedic-workload --cmd zombies --cmd --count --cmd 30 \
        | sed "s|^|$out/nodemedic-workload.tar |"
fi
