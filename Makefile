# securemodel: developer entry points. Everything slow is cached under $(CACHE), keyed by version:
# the cluster's binaries, the base image's rootfs, image layers, a wheelhouse, the virtualenv.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CACHE ?= /var/cache/securemodel
export SECUREMODEL_CACHE := $(CACHE)
PYTHON ?= python3
# The virtual environment lives outside the work tree, keyed by the dependency declaration.
VENV := $(CACHE)/venv/$(shell sha256sum pyproject.toml | cut -c1-12)
PY := $(VENV)/bin/python
export KUBECONFIG := $(CURDIR)/.cluster/kubeconfig
export PATH := $(CURDIR)/.cluster/bin:$(PATH)
PYTEST_ARGS ?=

.PHONY: help deps venv crds deploy bench cluster cluster-down images test test-unit test-integration test-e2e demo

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## install the machine packages the cluster and image builds need (Debian)
	@hack/install-deps.sh

# No prerequisite: the path already names pyproject.toml's content, and a fresh clone's files are all newer than
# any cache, so a dependency on its date would rebuild the venv (about a minute) on every CI run.
$(VENV)/.ok:
	hack/wheelhouse.sh worker dev
	rm -rf $(CACHE)/venv/* && $(PYTHON) -m venv $(VENV)  # one venv at a time: torch makes each ~6 GB
	$(PY) -m pip install -q --no-index --find-links $(CACHE)/wheelhouse --upgrade pip
	$(PY) -m pip install -q --no-index --find-links $(CACHE)/wheelhouse -e '.[dev,worker]'
	touch $@

venv: $(VENV)/.ok ## the Python virtual environment (cached by pyproject.toml), linked as .venv
	@ln -sfn $(VENV) .venv
	@$(PY) -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null

crds: venv ## regenerate crds/ from the schemas in securemodel/api, and the chart's copy and deploy/ with them
	$(PY) -m securemodel.api.crdgen
	$(PY) hack/render-deploy.py

deploy: venv ## render deploy/ from the chart (needs the cluster's helm: make cluster)
	$(PY) hack/render-deploy.py

cluster: deps venv ## bring up the local single-node Kubernetes (idempotent); kubeconfig in .cluster/
	@hack/cluster-up.sh

cluster-down: ## stop the local cluster and remove everything it created
	@hack/cluster-down.sh

images: deps cluster ## build the project's images with buildah and load them into the cluster
	@hack/images.sh

test-unit: venv ## fast tests of the pure logic
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv cluster ## tests against the real API server
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: venv images ## tests on the real cluster, running the project's images
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

# Two workers: one runs the integration and end-to-end tests in order (one cluster, one operator), the
# other the unit tests beside them (tests/conftest.py groups them).
test: venv images ## the whole suite: unit, integration, end-to-end
	$(PY) -m pytest tests -n 2 --dist loadscope --durations=30 $(PYTEST_ARGS)

demo: images ## local cluster, CRDs, the operator, the examples, and what a user sees
	@hack/demo.sh

bench: venv cluster ## run every benchmark; each writes its section of docs/benchmarks.md
	$(PY) -m bench.claims
	$(PY) -m bench.control_plane
	$(PY) -m bench.composition
	$(PY) -m bench.dp_training
	$(PY) -m bench.compression
	$(PY) -m bench.finetune
	$(PY) -m bench.serving
	$(PY) -m bench.federated
