//go:build tools

// Package tools pins the helm command built by provision.sh so that
// `go mod tidy` keeps its dependencies in go.sum.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
