#!/usr/bin/env bash
# Builds the krew archive of kubectl-nodemedic for this machine's platform
# (release profile) and a manifest for it with the archive's sha256:
#   <target>/krew/kubectl-nodemedic-<os>-<arch>.tar.gz
#   <target>/krew/nodemedic.yaml
# Install from them: kubectl krew install --manifest=<target>/krew/nodemedic.yaml
#                      --archive=<target>/krew/kubectl-nodemedic-<os>-<arch>.tar.gz
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$target" ] || { echo "krew: cannot find cargo's target directory" >&2; exit 1; }
cargo build --release -p kubectl-nodemedic
os=linux
case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) echo "krew: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
out="$target/krew"
stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage"
cp "$target/release/kubectl-nodemedic" "$stage/"
cp README.md "$stage/"
archive="$out/kubectl-nodemedic-$os-$arch.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$archive" kubectl-nodemedic README.md
sum="$(sha256sum "$archive" | cut -d' ' -f1)"
sed "s/RELEASE_ARCHIVE_SHA256/$sum/" "$here/nodemedic.yaml" > "$out/nodemedic.yaml"
echo "archive:  $archive"
echo "sha256:   $sum"
echo "manifest: $out/nodemedic.yaml"
