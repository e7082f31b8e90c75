#!/usr/bin/env bash
# Assemble a single-layer OCI image archive from files, without a container
# engine or a registry (tar, sha256sum and printf only).
#
#   tests/kind/oci-image.sh --name REF --output FILE.tar [options] [SRC=DEST[:MODE]]...
#
# The archive is an OCI image layout in a tar (oci-layout, index.json,
# blobs/sha256/...). Its index entry carries the `io.containerd.image.name`
# (REF) and `org.opencontainers.image.ref.name` (the tag) annotations, so it
# loads as REF with
#   kind load image-archive FILE.tar --name CLUSTER
#   ctr -n k8s.io images import FILE.tar
#   docker load -i FILE.tar      (Docker 25 and later)
#   podman load -i FILE.tar
# and pods then use it with `imagePullPolicy: Never` (or IfNotPresent).
#
# Options:
#   --name REF              image reference, e.g. localhost/nodemedic-agent:e2e
#                           (a bare name gets docker.io/library/, as Docker would)
#   --output FILE           archive to write (its directory is created)
#   SRC=DEST[:MODE]         add file SRC at absolute path DEST; MODE is octal
#                           (default: SRC's permission bits)
#   --tree SRC_DIR=DEST     add a directory tree (symlinks kept)
#   --dir DEST[:MODE]       add an empty directory (e.g. --dir /tmp:1777)
#   --symlink DEST=TARGET   add a symbolic link
#   --add-user NAME:UID:GID write /etc/passwd, /etc/group (root + this user,
#                           home /, shell /sbin/nologin) unless files give them
#   --user USER[:GROUP]     the image's user (e.g. 65532:65532)
#   --entrypoint ARG        append one Entrypoint argument (repeatable)
#   --cmd ARG               append one Cmd argument (repeatable)
#   --env KEY=VALUE         (repeatable; PATH defaults to the usual one)
#   --workdir DIR           (default /)
#   --label KEY=VALUE       image config label (repeatable)
#   --arch ARCH             GOARCH-style architecture (default: this machine's)
#   --gzip                  gzip the layer (default: uncompressed, faster here)
#
# Every file is owned by 0:0 and every timestamp is the epoch, so equal inputs
# give a byte-identical archive. The archive is cached by content: FILE.key
# holds a hash of the options and of every input's bytes and mode; when it
# matches, nothing is rebuilt. Prints `REF sha256:<manifest digest>` on stdout.
set -euo pipefail

prog="oci-image.sh"
die() {
    echo "$prog: $*" >&2
    exit 2
}

name="" output="" user="" workdir="/" arch="" gzip_layer=0
entrypoint=() cmd=() envs=() labels=() adds=() trees=() dirs=() links=() add_user=""

need_arg() { [ "$#" -ge 2 ] || die "$1 needs a value"; }
while [ "$#" -gt 0 ]; do
    case "$1" in
        --name) need_arg "$@"; name="$2"; shift 2 ;;
        --output | -o) need_arg "$@"; output="$2"; shift 2 ;;
        --tree) need_arg "$@"; trees+=("$2"); shift 2 ;;
        --dir) need_arg "$@"; dirs+=("$2"); shift 2 ;;
        --symlink) need_arg "$@"; links+=("$2"); shift 2 ;;
        --add-user) need_arg "$@"; add_user="$2"; shift 2 ;;
        --user) need_arg "$@"; user="$2"; shift 2 ;;
        --entrypoint) need_arg "$@"; entrypoint+=("$2"); shift 2 ;;
        --cmd) need_arg "$@"; cmd+=("$2"); shift 2 ;;
        --env) need_arg "$@"; envs+=("$2"); shift 2 ;;
        --workdir) need_arg "$@"; workdir="$2"; shift 2 ;;
        --label) need_arg "$@"; labels+=("$2"); shift 2 ;;
        --arch) need_arg "$@"; arch="$2"; shift 2 ;;
        --gzip) gzip_layer=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --*) die "unknown option $1 (see --help)" ;;
        *=*) adds+=("$1"); shift ;;
        *) die "unexpected argument '$1': files are given as SRC=DEST[:MODE] (see --help)" ;;
    esac
done
[ -n "$name" ] || die "--name REF is required"
[ -n "$output" ] || die "--output FILE is required"
[ "${#adds[@]}" -gt 0 ] || [ "${#trees[@]}" -gt 0 ] || die "nothing to put in the image: give SRC=DEST files or --tree"

if [ -z "$arch" ]; then
    case "$(uname -m)" in
        x86_64) arch=amd64 ;;
        aarch64 | arm64) arch=arm64 ;;
        *) arch="$(uname -m)" ;;
    esac
fi

# Full reference as containerd and Docker name it.
ref="$name"
first="${ref%%/*}"
if [ "$first" = "$ref" ]; then
    ref="docker.io/library/$ref"
elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    ref="docker.io/$ref"
fi
last="${ref##*/}"
case "$last" in
    *@*) die "--name must be a tag reference, not a digest: $name" ;;
    *:*) tag="${last##*:}" ;;
    *) tag=latest ref="$ref:latest" ;;
esac

# ---- JSON helpers (strings only need escaping of \ " and control chars) ----
json_str() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    s="${s//$'\n'/\\n}"
    s="${s//$'\t'/\\t}"
    s="${s//$'\r'/\\r}"
    if [[ "$s" =~ [[:cntrl:]] ]]; then die "control character in a value: $1"; fi
    printf '"%s"' "$s"
}
json_arr() {
    local out="[" sep="" v
    for v in "$@"; do
        out+="$sep$(json_str "$v")"
        sep=","
    done
    printf '%s]' "$out"
}
json_map() { # KEY=VALUE...
    local out="{" sep="" kv
    for kv in "$@"; do
        [[ "$kv" == *=* ]] || die "expected KEY=VALUE, got '$kv'"
        out+="$sep$(json_str "${kv%%=*}"):$(json_str "${kv#*=}")"
        sep=","
    done
    printf '%s}' "$out"
}

# ---- parse and check inputs; compute the cache key ----
split_add() { # SRC=DEST[:MODE] -> src dest mode
    local spec="$1" rest
    add_src="${spec%%=*}"
    rest="${spec#*=}"
    add_mode=""
    if [[ "$rest" =~ ^(.*):([0-7]{3,4})$ ]]; then
        add_dest="${BASH_REMATCH[1]}"
        add_mode="${BASH_REMATCH[2]}"
    else
        add_dest="$rest"
    fi
    if [ -z "$add_src" ] || [ ! -f "$add_src" ]; then die "not a file: '$add_src' (in '$spec')"; fi
    [[ "$add_dest" == /* ]] || die "destination must be absolute: '$add_dest' (in '$spec')"
    [ -n "$add_mode" ] || add_mode="$(stat -L -c '%a' "$add_src")"
}

key_input() {
    printf 'oci-image v1\n'
    sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
    printf '%s\n' "ref=$ref" "arch=$arch" "user=$user" "workdir=$workdir" "gzip=$gzip_layer" "add-user=$add_user"
    printf 'entrypoint=%s\n' "$(json_arr "${entrypoint[@]}")"
    printf 'cmd=%s\n' "$(json_arr "${cmd[@]}")"
    printf 'env=%s\n' "${envs[@]}" "labels=" "${labels[@]}" "dirs=" "${dirs[@]}" "links=" "${links[@]}"
    local spec t src dest
    for spec in "${adds[@]}"; do
        split_add "$spec"
        printf 'add %s %s %s\n' "$add_dest" "$add_mode" "$(sha256sum <"$add_src" | cut -d' ' -f1)"
    done
    for t in "${trees[@]}"; do
        src="${t%%=*}" dest="${t#*=}"
        [ -d "$src" ] || die "--tree: not a directory: '$src'"
        [[ "$dest" == /* ]] || die "--tree destination must be absolute: '$dest'"
        printf 'tree %s\n' "$dest"
        (cd "$src" && find . -printf '%P %y %m %l\n' | LC_ALL=C sort &&
            find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
    done
}
key="$(key_input | sha256sum | cut -d' ' -f1)"

out_dir="$(dirname "$output")"
mkdir -p "$out_dir"
if [ -f "$output" ] && [ "$(cat "$output.key" 2>/dev/null)" = "$key" ] && [ -s "$output.digest" ]; then
    echo "$prog: $ref: cached ($output)" >&2
    echo "$ref $(cat "$output.digest")"
    exit 0
fi

work="$(mktemp -d "$out_dir/.oci-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root" "$work/blobs/sha256"
umask 022

# ---- lay out the root filesystem ----
for spec in "${adds[@]}"; do
    split_add "$spec"
    install -D -m "$add_mode" "$add_src" "$root$add_dest"
done
for t in "${trees[@]}"; do
    src="${t%%=*}" dest="${t#*=}"
    mkdir -p "$root$dest"
    cp -a "$src/." "$root$dest/"
done
for d in "${dirs[@]}"; do
    if [[ "$d" =~ ^(.*):([0-7]{3,4})$ ]]; then
        mkdir -p "$root${BASH_REMATCH[1]}"
        chmod "${BASH_REMATCH[2]}" "$root${BASH_REMATCH[1]}"
    else
        mkdir -p "$root$d"
    fi
done
for l in "${links[@]}"; do
    [[ "$l" == /*=* ]] || die "--symlink expects /DEST=TARGET, got '$l'"
    mkdir -p "$(dirname "$root${l%%=*}")"
    ln -sfn "${l#*=}" "$root${l%%=*}"
done
if [ -n "$add_user" ]; then
    IFS=: read -r u_name u_uid u_gid <<<"$add_user"
    [[ -n "$u_name" && "$u_uid" =~ ^[0-9]+$ && "$u_gid" =~ ^[0-9]+$ ]] ||
        die "--add-user expects NAME:UID:GID, got '$add_user'"
    mkdir -p "$root/etc"
    [ -e "$root/etc/passwd" ] || printf 'root:x:0:0:root:/root:/sbin/nologin\n%s:x:%s:%s:%s:/:/sbin/nologin\n' \
        "$u_name" "$u_uid" "$u_gid" "$u_name" >"$root/etc/passwd"
    [ -e "$root/etc/group" ] || printf 'root:x:0:\n%s:x:%s:\n' "$u_name" "$u_gid" >"$root/etc/group"
fi

# ---- the layer: sorted entries, root-owned, epoch timestamps ----
(cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$work/files"
tar --create --file "$work/layer.tar" --directory "$root" --no-recursion --files-from "$work/files" \
    --format=gnu --owner=0 --group=0 --numeric-owner --mtime=@0
diff_id="sha256:$(sha256sum <"$work/layer.tar" | cut -d' ' -f1)"
if [ "$gzip_layer" = 1 ]; then
    gzip -n -6 <"$work/layer.tar" >"$work/layer.blob"
    layer_type="application/vnd.oci.image.layer.v1.tar+gzip"
else
    mv "$work/layer.tar" "$work/layer.blob"
    layer_type="application/vnd.oci.image.layer.v1.tar"
fi
layer_digest="$(sha256sum <"$work/layer.blob" | cut -d' ' -f1)"
layer_size="$(stat -c %s "$work/layer.blob")"
mv "$work/layer.blob" "$work/blobs/sha256/$layer_digest"

# ---- config, manifest, index ----
has_path=0
for e in "${envs[@]}"; do [[ "$e" == PATH=* ]] && has_path=1; done
[ "$has_path" = 1 ] || envs=("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "${envs[@]}")
cfg="{\"created\":\"1970-01-01T00:00:00Z\",\"architecture\":$(json_str "$arch"),\"os\":\"linux\",\"config\":{"
cfg+="\"Env\":$(json_arr "${envs[@]}")"
[ "${#entrypoint[@]}" -gt 0 ] && cfg+=",\"Entrypoint\":$(json_arr "${entrypoint[@]}")"
[ "${#cmd[@]}" -gt 0 ] && cfg+=",\"Cmd\":$(json_arr "${cmd[@]}")"
[ -n "$user" ] && cfg+=",\"User\":$(json_str "$user")"
cfg+=",\"WorkingDir\":$(json_str "$workdir")"
[ "${#labels[@]}" -gt 0 ] && cfg+=",\"Labels\":$(json_map "${labels[@]}")"
cfg+="},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"$diff_id\"]},"
cfg+="\"history\":[{\"created\":\"1970-01-01T00:00:00Z\",\"created_by\":\"tests/kind/oci-image.sh\"}]}"
printf '%s' "$cfg" >"$work/config.json"
cfg_digest="$(sha256sum <"$work/config.json" | cut -d' ' -f1)"
cfg_size="$(stat -c %s "$work/config.json")"
mv "$work/config.json" "$work/blobs/sha256/$cfg_digest"

mf="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
mf+="\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cfg_digest\",\"size\":$cfg_size},"
mf+="\"layers\":[{\"mediaType\":\"$layer_type\",\"digest\":\"sha256:$layer_digest\",\"size\":$layer_size}]}"
printf '%s' "$mf" >"$work/manifest.json"
mf_digest="$(sha256sum <"$work/manifest.json" | cut -d' ' -f1)"
mf_size="$(stat -c %s "$work/manifest.json")"
mv "$work/manifest.json" "$work/blobs/sha256/$mf_digest"

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":%s,"os":"linux"},"annotations":{"io.containerd.image.name":%s,"org.opencontainers.image.ref.name":%s}}]}' \
    "$mf_digest" "$mf_size" "$(json_str "$arch")" "$(json_str "$ref")" "$(json_str "$tag")" >"$work/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"

tar --create --file "$work/archive.tar" --directory "$work" --format=gnu --owner=0 --group=0 --numeric-owner \
    --mtime=@0 --sort=name oci-layout index.json blobs
mv -f "$work/archive.tar" "$output"
echo "sha256:$mf_digest" >"$output.digest"
echo "$key" >"$output.key"
echo "$prog: $ref: built $output ($(((layer_size + 1048575) / 1048576)) MiB layer)" >&2
echo "$ref sha256:$mf_digest"
