# The README's commands. `make test` runs every test tier that this machine
# can run: unit, real-host (as root) and real control plane (etcd +
# kube-apiserver, provisioned on first use and cached under ~/.cache).

CARGO ?= cargo

.PHONY: test test-cargo envtest prometheus scan crds lint bench soak image krew-archive kind-provision e2e-kind e2e-kind-ci e2e-kind-nodes e2e-kind-full e2e-kind-smoke e2e-kind-docker kind-up kind-up-nodes kind-down

## Run every test: unit, real host, real control plane, then the kind tier
## (CI's part of it: see e2e-kind-ci; the rest is e2e-kind-full).
## The kind tier's static binaries are compiled (niced) while the cargo tests
## run, since those mostly wait on their control planes; the kind tier's own
## images.sh then finds them built (and builds them itself if this failed).
## (Not `make -n test`: make runs lines holding $(MAKE) even then.)
test:
	@log="$${TMPDIR:-/tmp}/nodemedic-prebuild-images.$$$$.log"; \
	  nice -n 10 tests/kind/images.sh --with-workload --build-only >"$$log" 2>&1 & prebuild=$$!; \
	  $(MAKE) --no-print-directory test-cargo; rc=$$?; \
	  if wait $$prebuild; then rm -f "$$log"; else echo "make test: the image binaries built beside the cargo tests failed (log: $$log); the kind tier builds them again and says why" >&2; fi; \
	  [ $$rc = 0 ] || exit $$rc; \
	  $(MAKE) --no-print-directory e2e-kind-ci

## Every cargo test (provisions the control-plane binaries and promtool first),
## `cargo test --workspace --all-targets` built once and run in two lanes
## at the same time (tests/cargo-test-lanes.sh says which and why).
test-cargo: envtest prometheus
	@eval "$$(tests/envtest/provision.sh --print-env)" && \
	  eval "$$(tests/prometheus/provision.sh --print-env)" && \
	  CARGO="$(CARGO)" tests/cargo-test-lanes.sh

## The kind tier alone: images, cluster, helm install, a real remediation,
## helm uninstall, cluster down. See docs/kind.md.
e2e-kind:
	tests/kind/e2e.sh

## What `make test` (CI) runs of the kind tier: the single-node e2e, then on
## three nodes the network check, the drain scenario and the culprit check
## (issue 14: pod-level steps only for a pod's problem), without Prometheus
## (e2e-kind-nodes has it). See docs/testing.md.
e2e-kind-ci: e2e-kind
	NODEMEDIC_KIND_PROMETHEUS=0 tests/kind/e2e-nodes.sh drain culprit

## The three-node scenarios (one control plane, two workers): network check,
## Prometheus on the host, drain, culprit, agent restart with a pending
## request, agent down, storm, drain with a PDB, operator failover, API server
## restart, upgrade from the previous CRD change, every dashboard query.
## See docs/kind.md.
e2e-kind-nodes:
	tests/kind/e2e-nodes.sh

## The whole kind tier: the single-node e2e and every three-node scenario.
e2e-kind-full: e2e-kind e2e-kind-nodes

## CI's part of the kind tier through kind's docker provider, on a machine
## without a Docker engine: a private dockerd from Debian's docker.io with
## this tier's node image, stopped (firewall restored) at the end. Not in
## `make test`. See docs/kind.md#docker-mode.
e2e-kind-docker:
	tests/kind/docker-engine.sh run sh -c 'tests/kind/e2e.sh && NODEMEDIC_KIND_PROMETHEUS=0 tests/kind/e2e-nodes.sh drain culprit'

## nodemedic's image as an OCI archive, without Docker or a registry
## (static release binaries; load it with kind, ctr or podman).
image:
	tests/kind/images.sh

## kubectl-nodemedic's krew archive for this platform and a manifest with
## its sha256 (docs/kubectl-plugin.md).
krew-archive:
	kubectl-nodemedic/krew/package.sh

## The benchmarks (figures in docs/benchmarks.md).
bench: envtest
	@eval "$$(tests/envtest/provision.sh --print-env)" && \
	  $(CARGO) bench -p nodemedic-agent -p nodemedic-operator

## The soak benchmark (not in CI, not in `make test`; about SOAK_MINUTES plus
## a minute, as root): a busy node under examples/production.yaml in DryRun,
## counting findings and planned actions. Exits 1 if a disruptive action was
## planned. Figures in docs/benchmarks.md ("Soak: false positives on a busy node").
## Built for the whole workspace first (one feature set, so the agent, the
## operator and the workload generator it runs are that same build).
SOAK_MINUTES ?= 30
soak: envtest
	$(CARGO) build --release --workspace --bins
	@eval "$$(tests/envtest/provision.sh --print-env)" && \
	  nice -n 5 "$${CARGO_TARGET_DIR:-target}/release/nodemedic-soak" --minutes $(SOAK_MINUTES)

## Build or locate kube-apiserver, etcd, kubectl and helm for the tests.
envtest:
	tests/envtest/provision.sh

## Fetch promtool and prometheus (Debian's package, cached under
## ~/.cache/nodemedic/prometheus) for the alert tests.
prometheus:
	tests/prometheus/provision.sh

## The main job: one-shot scan of this machine.
scan:
	$(CARGO) run --release -p nodemedic-agent -- scan

## Regenerate CRD YAML (crds/yaml, chart copy) and docs/api-reference.md.
crds:
	$(CARGO) run -p nodemedic-crds --bin crdgen

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## kind tier: build or reuse kind, the node image and its images (cached
## under ~/.cache/nodemedic/kind; podman here, Docker where it exists).
kind-provision:
	tests/kind/provision.sh

## kind tier smoke test: cluster up, a locally built image in a pod, hostPID,
## cluster down, host clean. See docs/kind.md.
e2e-kind-smoke:
	tests/kind/smoke.sh

## A kind cluster to work with by hand (eval "$$(tests/kind/cluster.sh env)").
kind-up:
	tests/kind/cluster.sh up

## The same with two workers, named nodemedic-nodes (down: make kind-down
## KIND_CLUSTER_NAME=nodemedic-nodes).
kind-up-nodes:
	KIND_CLUSTER_NAME=nodemedic-nodes NODEMEDIC_KIND_WORKERS=2 tests/kind/cluster.sh up

kind-down:
	tests/kind/cluster.sh down
