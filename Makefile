# The README's commands. `make test` runs every test tier that this machine
# can run: unit, real-host (as root) and real control plane (etcd +
# kube-apiserver, provisioned on first use and cached under ~/.cache).

CARGO ?= cargo

.PHONY: test envtest scan crds lint bench

## Run every test (provisions the control-plane binaries first).
test: envtest
	@eval "$$(tests/envtest/provision.sh --print-env)" && \
	  $(CARGO) test --workspace --all-targets --no-fail-fast

## Build or locate kube-apiserver, etcd, kubectl and helm for the tests.
envtest:
	tests/envtest/provision.sh

## The main job: one-shot scan of this machine.
scan:
	$(CARGO) run --release -p nodemedic-agent -- scan

## Regenerate CRD YAML (crds/yaml, chart copy) and docs/api-reference.md.
crds:
	$(CARGO) run -p nodemedic-crds --bin crdgen

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
