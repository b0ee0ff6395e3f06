"""A real Prometheus scrapes the running server: request counters, latency and batch histograms as PromQL sees
them, every dashboard and alert expression evaluates, and Ray's metrics port serves the ray_* names we use.

Prometheus is /usr/bin/prometheus from the Debian package `prometheus` (.ci/run installs it); without it the
Prometheus tests skip. Regenerate deploy/grafana/known_ray_metrics.txt from the live Ray metrics port with
    IMGSERVE_UPDATE_KNOWN_RAY_METRICS=1 .venv/bin/python -m pytest tests/integration/test_prometheus.py \
        -k ray_metrics_port
"""

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from loadtests.server_process import free_port
from tests.integration.conftest import RunningServer
from tests.paths import IMAGENET_SAMPLES, require
from tests.unit.test_deploy_configs import (
    ALERTS,
    DASHBOARD,
    KNOWN_RAY_METRICS,
    alert_exprs,
    dashboard_exprs,
    known_ray_metrics,
    promql_metric_names,
)

pytestmark = pytest.mark.integration

PROMETHEUS_CONFIG = Path(ALERTS).parent / "prometheus.yml"
GOOD_REQUESTS, BAD_REQUESTS = 7, 3
UPDATE_ENV = "IMGSERVE_UPDATE_KNOWN_RAY_METRICS"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s", "$tenant": ".*"}
SAMPLE_NAME = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)", re.MULTILINE)


def ray_metrics_port(server: RunningServer) -> int:
    """Ray's metrics export port of the server's node. The proxy logs its node id; each node's dashboard agent
    records its port in <session_dir>/metrics_export_port_<node_id> (session dirs of `imgserve serve` live
    under /tmp/imgserve-ray-*, serving/server.py)."""
    deadline = time.monotonic() + 30
    while True:
        log = server.log.read_text(errors="replace")
        starts = re.findall(r"Proxy starting on node ([0-9a-f]+) \(HTTP port: (\d+)", log)
        node_ids = [node for node, port in starts if int(port) == urlparse(server.http_url).port]
        patterns = [f"imgserve-ray-*/session_2*/metrics_export_port_{node}" for node in node_ids]
        files = [path for pattern in patterns for path in Path("/tmp").glob(pattern)]
        if files:
            return int(files[0].read_text().strip())
        if time.monotonic() > deadline:
            pytest.fail(f"no Ray metrics export port for the server (proxy nodes {node_ids}) in {server.log}")
        time.sleep(1)


def scrape_sample_names(port: int) -> set[str]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    return {name for name in SAMPLE_NAME.findall(text)}


def format_known_ray_metrics(
    names: set[str], gpu_only: set[str], serve_handle: frozenset[str] | set[str] = frozenset()
) -> str:
    lines = [
        "# Ray 2.60 metric names (Prometheus sample names) that Ray's metrics export port serves for a running",
        "# imgserve, one per line; read by tests/unit/test_deploy_configs.py to check the names used in",
        "# deploy/grafana/dashboards/imgserve.json and deploy/prometheus/alerts.yml. Scraped from a single-node",
        "# `imgserve serve` (the local placement, serve_config.yaml) after classify traffic; regenerate with",
        f"#   {UPDATE_ENV}=1 .venv/bin/python -m pytest tests/integration/test_prometheus.py -k ray_metrics_port",
        "# Some series appear only after the event they count (first request, first error, first spill).",
        "# Entries flagged gpu-only are exported only by nodes with GPUs (Ray 2.60 source:",
        "# ray/dashboard/modules/reporter/reporter_agent.py, METRICS_GAUGES); the live check skips them on CPU.",
        "# Entries flagged serve-handle are exported only where requests pass a Serve deployment handle or",
        "# Serve's proxy (`--placement graph`, `--ray-proxy`); the local placement's direct listeners use neither,",
        "# so a plain `imgserve serve` never has them (every query using one also reads an imgserve_* series);",
        "# the live check against the local placement skips them.",
    ]
    lines += sorted(names - gpu_only - serve_handle)
    lines += [f"{name} gpu-only" for name in sorted(gpu_only)]
    lines += [f"{name} serve-handle" for name in sorted(serve_handle)]
    return "\n".join(lines) + "\n"


def referenced_ray_metrics() -> set[str]:
    exprs = dashboard_exprs(_dashboard()) + alert_exprs()
    return {name for _, expr in exprs for name in promql_metric_names(expr) if name.startswith("ray_")}


def _dashboard() -> dict:
    import json

    return json.loads(DASHBOARD.read_text())


# ---- a real Prometheus ----


@pytest.fixture(scope="module")
def prometheus(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is absent: install the Debian package `prometheus` (.ci/run does)")
    tmp = tmp_path_factory.mktemp("prometheus")
    # The checked-in config with its relabelling and rules; static targets for this server, scraped every 1 s.
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ALERTS)]
    targets = {"imgserve": urlparse(server.http_url).netloc, "ray": f"127.0.0.1:{ray_metrics_port(server)}"}
    for job in config["scrape_configs"]:
        job.pop("file_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        if "authorization" in job:  # the imgserve job's operator key: any token while this server runs auth off
            (tmp / "operator.key").write_text("test-operator-key")
            job["authorization"]["credentials_file"] = str(tmp / "operator.key")
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(url: str, expr: str) -> list[dict]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def value(url: str, expr: str) -> float:
    """The summed latest sample of the selector `expr` (0 when no series exists yet). last_over_time rides over
    a scrape that timed out on a loaded machine (its series are briefly stale)."""
    return float(query(url, f"sum(last_over_time({expr}[30s])) or vector(0)")[0]["value"][1])


def wait_for_scrape_after(url: str, job: str, moment: float, timeout_s: float = 30) -> None:
    """Until Prometheus holds a scrape of `job` that started after `moment` (epoch seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = query(url, f'timestamp(up{{job="{job}"}} == 1)')
        if result and float(result[0]["value"][1]) > moment:
            return
        time.sleep(0.3)
    pytest.fail(f"no successful scrape of job {job} after {moment}: {query(url, 'up')}")


def test_counters_and_histograms_match_the_requests_sent(prometheus: str, http: httpx.Client) -> None:
    photo = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[0].read_bytes()
    series = {
        "ok": 'imgserve_requests_total{endpoint="/v1/classify",status="200"}',
        "client_errors": 'imgserve_requests_total{endpoint="/v1/classify",status=~"4.."}',
        "errors": 'imgserve_errors_total{endpoint="/v1/classify"}',
        "latency_count": 'imgserve_request_latency_seconds_count{endpoint="/v1/classify"}',
        "latency_inf": 'imgserve_request_latency_seconds_bucket{endpoint="/v1/classify",le="+Inf"}',
        "batch_count": "imgserve_batch_size_count",
        "batch_sum": "imgserve_batch_size_sum",
    }
    wait_for_scrape_after(prometheus, "imgserve", time.time())
    before = {key: value(prometheus, expr) for key, expr in series.items()}

    for _ in range(GOOD_REQUESTS):
        response = http.post("/v1/classify", content=photo)
        assert response.status_code == 200, response.text
    for body in (b"definitely not an image", photo[:300], b"\x89PNG\r\n\x1a\n" + b"\0" * 64)[:BAD_REQUESTS]:
        response = http.post("/v1/classify", content=body)
        assert 400 <= response.status_code < 500, response.text

    wait_for_scrape_after(prometheus, "imgserve", time.time() + 0.5)
    wait_for_scrape_after(prometheus, "imgserve", time.time() + 0.5)  # and one more, for a slow first one
    diff = {key: value(prometheus, expr) - before[key] for key, expr in series.items()}
    assert diff["ok"] == GOOD_REQUESTS, diff
    assert diff["client_errors"] == BAD_REQUESTS, diff
    assert diff["errors"] == BAD_REQUESTS, diff
    assert diff["latency_count"] == diff["latency_inf"] == GOOD_REQUESTS + BAD_REQUESTS, diff
    # Each good request is one image = one item of some model batch; bad ones never reach the model.
    assert diff["batch_sum"] == GOOD_REQUESTS, diff
    assert 1 <= diff["batch_count"] <= diff["batch_sum"], diff


def test_server_error_series_exist_at_zero_from_the_start(prometheus: str) -> None:
    """rate/increase read a series from its second sample: errors that made a series (a burst of 503s after a
    restart) counted nothing in the error ratio, its burn rate or their alerts, and with none yet the panels said
    "No data". Each endpoint's server-error series exist at 0 from the replica's start."""
    wait_for_scrape_after(prometheus, "imgserve", time.time())
    for endpoint in ("/v1/analyze", "/v2/models/{model}/infer", "ModelInfer", "AnalyzeStream", "(admission)"):
        found = query(prometheus, f'imgserve_errors_total{{endpoint="{endpoint}",kind="model_unavailable"}}')
        assert found, f"no model_unavailable series for {endpoint} before any error"
    ratio = query(prometheus, 'sum(rate(imgserve_errors_total{kind=~"internal|model_unavailable"}[5m]))')
    assert ratio, "the error ratio's numerator is 'No data' on a server without errors"


def test_dashboard_and_alert_expressions_evaluate(prometheus: str) -> None:
    for _, expr in dashboard_exprs(_dashboard()) + alert_exprs():
        for variable, replacement in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, replacement)
        query(prometheus, expr)  # asserts Prometheus accepted it
    deadline = time.monotonic() + 30
    while True:
        rules = [
            rule
            for group in httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
            for rule in group["rules"]
        ]
        evaluated = [rule for rule in rules if not rule["lastEvaluation"].startswith("0001")]
        if rules and len(evaluated) == len(rules):
            break
        assert time.monotonic() < deadline, f"rules not evaluated: {rules}"
        time.sleep(0.5)
    assert {rule["name"] for rule in rules} == {name for name, _ in alert_exprs()}
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]


def test_ray_serve_metrics_reach_prometheus(prometheus: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        healthy = {
            r["metric"].get("deployment"): float(r["value"][1])
            for r in query(
                prometheus, 'sum by (deployment) (ray_serve_deployment_replica_healthy{application="imgserve"})'
            )
        }
        if {"Ingress", "Decoder", "model-mobilenet_v2_imagenet"} <= set(healthy):
            break
        assert time.monotonic() < deadline, f"ray_serve_deployment_replica_healthy by deployment: {healthy}"
        time.sleep(1)
    assert all(count >= 1 for count in healthy.values()), healthy


# ---- Ray's metrics export port itself (no Prometheus needed) ----


def test_ray_metrics_port_serves_every_ray_metric_we_use(server: RunningServer, http: httpx.Client) -> None:
    photo = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[0].read_bytes()
    port = ray_metrics_port(server)
    known = known_ray_metrics()
    gpu_only = {name for name, flags in known.items() if "gpu-only" in flags}
    serve_handle = {name for name, flags in known.items() if "serve-handle" in flags}  # not in the local placement
    required = referenced_ray_metrics() - gpu_only - serve_handle
    deadline = time.monotonic() + 120
    while True:
        # Request-path series (batch timings, queue gauges) exist only once requests flowed; Ray reports them
        # to its agent every few seconds.
        assert http.post("/v1/classify", content=photo).status_code == 200
        scraped = {name for name in scrape_sample_names(port) if name.startswith("ray_")}
        missing = required - scraped
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(3)
    if os.environ.get(UPDATE_ENV):
        KNOWN_RAY_METRICS.write_text(format_known_ray_metrics(scraped | gpu_only, gpu_only, serve_handle - scraped))
    assert not missing, f"Ray's metrics port (:{port}) does not serve {sorted(missing)}"
    assert required <= set(known), f"add to known_ray_metrics.txt: {sorted(required - set(known))}"
