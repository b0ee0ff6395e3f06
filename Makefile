# imgserve: `make serve` and `make test` set everything up themselves (virtualenv, packages, models).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# torch's version is pinned in constraints.txt. Which build pip takes is pip's choice: on these machines its
# find-links hold the CPU wheel (2.13.0+cpu); from PyPI alone torch==2.13.0 is the CUDA build with several GB of
# nvidia-* wheels. TORCH_INDEX=<PyTorch's CPU wheel index URL> makes the torch install read that index instead.
PIP_INSTALL := $(PIP) install -q -c constraints.txt
TORCH_INDEX ?=
STAMP := $(VENV)/.installed
# serve_config.yaml: the one serve config (the graph, what KubeRay runs). `imgserve serve` applies the placement it
# chooses on top: local (every stage inside the Ingress replica, the fastest on one machine) unless Ray is a cluster;
# `make serve PLACEMENT=graph` runs one deployment per stage instead.
SERVE_CONFIG ?= serve_config.yaml
PLACEMENT ?= auto

.PHONY: venv ui serve test test-unit test-integration test-gpu lint models clean deploy-render bench bench-quality bench-ort-batch loadtest \
	fuzz fuzz-api bench-overload bench-convert bench-collection

$(STAMP): pyproject.toml constraints.txt $(wildcard protos/*.proto)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PIP_INSTALL) -e '.[dev,torch,heif,s3,gcs]'
	$(PY) -m serving.grpc.stubs
	touch $(STAMP)

venv: $(STAMP)

# The web UI's npm packages (serving/ui/package.json, exact versions): map outlines and Swagger UI for /docs.
# Install scripts are not run (swagger-ui-dist's one dependency, @scarf/scarf, is an install-time usage ping).
# Without npm the UI still works; its maps draw without coastlines and /docs points at /openapi.json.
UI_STAMP := serving/ui/node_modules/.installed
$(UI_STAMP): serving/ui/package.json
	@if command -v npm >/dev/null; then \
		cd serving/ui && npm install --no-audit --no-fund --no-package-lock --ignore-scripts --silent && touch node_modules/.installed; \
	else echo "warning: npm not found: the web UI's maps draw without coastlines, /docs has no Swagger UI"; fi

ui: $(UI_STAMP)

models: venv
	$(VENV)/bin/imgserve models prepare

serve: models ui
	$(VENV)/bin/imgserve serve --config $(SERVE_CONFIG) --placement $(PLACEMENT)

test: venv ui
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-gpu: venv
	$(PY) -m pytest tests/gpu $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check serving pipelines tooling tests loadtests

# Side-by-side benchmark, `python -m loadtests.bench` (naive server, Triton via PyTriton, imgserve HTTP/gRPC with the
# default placement as `make serve` runs it, the same with IMGSERVE_AUTH=required (auth overhead), imgserve gRPC with
# `--placement graph`, hardware limit); see BENCHMARKS.md.
bench: models
	$(PY) -m loadtests.bench $(BENCH_ARGS)

# Quality-only throughput (/v1/analyze?fields=quality) of this tree against BASELINE_REF, both started here in turn.
BASELINE_REF ?= 22a6545
bench-quality: models
	$(PY) -m loadtests.quality_throughput --baseline-ref $(BASELINE_REF) $(BENCH_ARGS)

# Fuzzing campaigns (docs/RELIABILITY.md): coverage-guided over the parsers (FUZZ_RUNS inputs per target, 7 targets),
# then schemathesis + gRPC against a server it starts. CI replays the corpus and a 2,000-input campaign per target.
FUZZ_RUNS ?= 150000
fuzz: models
	$(PY) -m tooling.fuzz.campaign --runs $(FUZZ_RUNS)
	$(PY) -m tooling.fuzz.api $(FUZZ_API_ARGS)

fuzz-api: models
	$(PY) -m tooling.fuzz.api $(FUZZ_API_ARGS)

# 10x overload for 60 s against a server it starts (docs/RELIABILITY.md): only 200/503, admitted p99, memory, recovery.
OVERLOAD_ARGS ?= --max-inflight 1 --rate 1000
bench-overload: models
	$(PY) -m loadtests.overload $(OVERLOAD_ARGS)

# Images per ONNX Runtime call on the CPU (IMGSERVE_ORT_RUN_BATCH): speed and arena memory at 32, 16 and 8, ~2 min.
bench-ort-batch: models
	$(PY) -m loadtests.ort_run_batch

# Conversion speed and memory against a plain-Pillow baseline (libraries, bulk, online), ~7 minutes; the figures
# BENCHMARKS.md's "Conversion" section quotes go to loadtests/results/convert.json.
CONVERT_ARGS ?= --json loadtests/results/convert.json
bench-convert: models
	$(PY) -m loadtests.convert_bench $(CONVERT_ARGS)

# Collection analysis (Ray Data CLI) against the same stages through /v1/batch, 5,000 images, then 20,000 for memory
# growth; ~40 minutes here. Results: loadtests/results/collection.json, BENCHMARKS.md "Collections".
COLLECTION_ARGS ?= --images 5000 --big 20000
bench-collection: models
	$(PY) -m loadtests.collection_bench $(COLLECTION_ARGS)

# Locust against a running server (make serve in another terminal); fails if p99 > SLO_MS or errors > 0.1%.
loadtest: venv ui
	mkdir -p loadtests/results
	$(VENV)/bin/locust -f loadtests/locustfile.py --headless -u 16 -r 4 -t 60s --host http://127.0.0.1:8000 \
		--csv loadtests/results/locust --html loadtests/results/locust.html

# The KubeRay RayService is rendered from serve_config.yaml (a unit test fails when they drift apart).
deploy-render: venv
	$(PY) -m serving.deploy_render --serve-config serve_config.yaml --out deploy/kuberay/rayservice.yaml

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
