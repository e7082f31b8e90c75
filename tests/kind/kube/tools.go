//go:build tools

// Package tools pins the commands that tests/kind/provision.sh builds for the
// kind node image. The first three imports repeat tests/envtest/kube/tools.go
// so that `go mod tidy` keeps exactly the versions pinned there (the build
// cache is then shared with tests/envtest/provision.sh).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"

	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
