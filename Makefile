# dspy-operator: every command a developer or CI needs. `make help` lists them.
# `make test` is self-contained on a fresh Debian machine: it installs what it needs.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
PIP       := $(VENV)/bin/pip
PYTEST    := $(PY) -m pytest
# Where the control plane's Go builds are cached, keyed by version inside.
export DSPY_CACHE_DIR ?= $(HOME)/.cache/dspy-operator
# Pods and tests never fetch litellm's price map from the internet.
export LITELLM_LOCAL_MODEL_COST_MAP := true

.PHONY: help venv debs test test-unit test-integration test-e2e serve demo demo-down \
        cluster-build cluster-up cluster-down helm-build promtool-build prometheus-build chart bench clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

$(VENV)/.installed: runtime/pyproject.toml operator/pyproject.toml
	@echo "==> virtualenv $(VENV): installing dspy-runtime[test] and dspy-operator[test]"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --disable-pip-version-check -e 'runtime[test]' -e 'operator[test]'
	@touch $@

venv: $(VENV)/.installed ## create the virtualenv with both packages and their test extras

debs: ## install the Debian packages the tests use (redis-server, openssl, curl), when missing
	@hack/ensure-debs.sh redis-server openssl curl

cluster-build: ## build (or reuse) the cached control-plane binaries
	@tests/cluster/cluster.sh build

cluster-up: cluster-build ## start the local Kubernetes control plane; writes .cluster/kubeconfig
	@tests/cluster/cluster.sh up

cluster-down: ## stop every control-plane process cluster-up started
	@tests/cluster/cluster.sh down

helm-build: ## build (or reuse) the pinned helm, cached next to the control plane
	@hack/helm.sh build

promtool-build: ## build (or reuse) the pinned promtool (alert rule checks and tests), cached likewise
	@hack/promtool.sh build

prometheus-build: ## build (or reuse) the pinned Prometheus server (scrape and analysis tests), cached likewise
	@hack/prometheus.sh build

chart: helm-build ## lint (helm lint --strict) and render the Helm chart in both RBAC modes
	@hack/chart.sh

test-unit: venv helm-build promtool-build ## unit tests (no servers; the chart's render with the pinned helm, the alerts with promtool)
	$(PYTEST) tests/unit

test-integration: venv debs prometheus-build ## integration tests: real Redis, real HTTP, the fake LM, a real Prometheus
	$(PYTEST) tests/integration

test-e2e: venv cluster-build helm-build prometheus-build ## e2e tests on the real control plane (started and stopped by the suite)
	$(PYTEST) tests/e2e

test: venv debs cluster-build helm-build promtool-build prometheus-build ## the whole suite: unit, integration and e2e
	$(PYTEST) tests

serve: venv ## run the runtime locally against the fake LM, in-memory cache only
	@hack/serve.sh

demo: venv debs cluster-build ## the README's first command: the whole system, on this machine
	@hack/demo.sh

demo-down: ## stop everything `make demo` started
	@hack/demo.sh down

bench: venv ## the benchmarks under bench/ (by hand; figures go in the README)
	@hack/ensure-debs.sh redis-server wrk
	@bench/run.sh

clean: cluster-down ## remove the virtualenv and local state (keeps the build cache)
	rm -rf $(VENV) .cluster .pytest_cache
