# imgserve: `make serve` and `make test` set everything up themselves (virtualenv, packages, models).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# torch is pinned to the CPU build through constraints.txt so CPU machines never pull CUDA wheels.
PIP_INSTALL := $(PIP) install -q -c constraints.txt
STAMP := $(VENV)/.installed
# serve_config.yaml: the per-stage graph (the default, and what KubeRay runs); on a small single machine
# `make serve SERVE_CONFIG=serve_config.single_node.yaml` runs decode and models inside the Ingress replica.
SERVE_CONFIG ?= serve_config.yaml

.PHONY: venv serve test test-unit test-integration test-gpu lint models clean deploy-render bench loadtest

$(STAMP): pyproject.toml constraints.txt $(wildcard protos/*.proto)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e '.[dev,torch,heif,dali]'
	$(PY) -m serving.grpc.stubs
	touch $(STAMP)

venv: $(STAMP)

models: venv
	$(VENV)/bin/imgserve models prepare

serve: models
	$(VENV)/bin/imgserve serve --config $(SERVE_CONFIG)

test: venv
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-gpu: venv
	$(PY) -m pytest tests/gpu $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check serving pipelines models tests loadtests

# Side-by-side benchmark (naive server, Triton via PyTriton, imgserve HTTP/gRPC, hardware limit); see BENCHMARKS.md.
bench: models
	$(PY) -m loadtests.bench $(BENCH_ARGS)

# Locust against a running server (make serve in another terminal); fails if p99 > SLO_MS or errors > 0.1%.
loadtest: venv
	mkdir -p loadtests/results
	$(VENV)/bin/locust -f loadtests/locustfile.py --headless -u 16 -r 4 -t 60s --host http://127.0.0.1:8000 \
		--csv loadtests/results/locust --html loadtests/results/locust.html

# The KubeRay RayService is rendered from serve_config.yaml (a unit test fails when they drift apart).
deploy-render: venv
	$(PY) -m serving.deploy_render --serve-config serve_config.yaml --out deploy/kuberay/rayservice.yaml

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
