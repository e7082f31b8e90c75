#!/bin/sh
# Import the OCI archives listed in /kind/nodemedic-images/images.txt
# ("FILE REF" lines) into containerd's k8s.io namespace and pin them, so
# kubelet finds every image kubeadm asks for without a registry.
set -eu
dir=/kind/nodemedic-images
sock=/run/containerd/containerd.sock
i=0
until ctr -a "$sock" version >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 120 ]; then
        echo "containerd did not answer on $sock" >&2
        exit 1
    fi
    sleep 0.5
done
snapshotter="$(sed -n 's/^[[:space:]]*snapshotter = "\(.*\)"/\1/p' /etc/containerd/config.toml | head -n1)"
while read -r file ref; do
    [ -n "$file" ] || continue
    ctr -a "$sock" -n k8s.io images import --snapshotter "${snapshotter:-overlayfs}" "$dir/$file" >/dev/null
    ctr -a "$sock" -n k8s.io images label "$ref" io.cri-containerd.pinned=pinned >/dev/null
    echo "imported $ref"
done <"$dir/images.txt"
