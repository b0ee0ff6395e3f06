"""deploy/: the Serve config against Ray's schema, the rendered RayService against its sources, Prometheus
configs and rules through promtool, and the Grafana dashboard's structure and metric names.

Metric names in PromQL are checked against what exists: imgserve_* against the families serving/metrics.py
registers, ray_* against deploy/grafana/known_ray_metrics.txt (scraped from a running server's Ray metrics
port; tests/integration/test_prometheus.py re-checks the live endpoint and can regenerate the file).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving import deploy_render
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

DEPLOY = PROJECT_ROOT / "deploy"
SERVE_CONFIG = PROJECT_ROOT / "serve_config.yaml"
RAYSERVICE = DEPLOY / "kuberay" / "rayservice.yaml"
OVERRIDES = DEPLOY / "kuberay" / "serve_overrides.yaml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "imgserve.json"
KNOWN_RAY_METRICS = DEPLOY / "grafana" / "known_ray_metrics.txt"
PROMETHEUS_CONFIGS = [DEPLOY / "prometheus" / "prometheus.yml", DEPLOY / "prometheus" / "prometheus-kubernetes.yml"]
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# Series Prometheus itself attaches to every scrape target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left"}
PROMQL_KEYWORDS |= {"group_right", "inf", "nan", "atan2"}
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


# ---- helpers shared with tests/integration/test_prometheus.py ----


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers left once strings, label matchers, ranges,
    grouping clauses and numbers are removed, minus functions (followed by '(') and keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\boffset\s+-?(\d+[a-zA-Z]+)+", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][+-]?\d+)?", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if word.lower() in PROMQL_KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, nested rows included."""
    found = []
    for panel in _all_panels(dashboard):
        for target in panel.get("targets", []):
            found.append((panel.get("title", ""), target.get("expr", "")))
    return found


def alert_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(rule.get("alert") or rule.get("record"), rule["expr"]) for group in groups for rule in group["rules"]]


def known_ray_metrics() -> dict[str, set[str]]:
    """Sample name -> flags (e.g. {'gpu-only'}) from deploy/grafana/known_ray_metrics.txt."""
    known: dict[str, set[str]] = {}
    for line in KNOWN_RAY_METRICS.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            known[words[0]] = set(words[1:])
    return known


def imgserve_sample_names() -> set[str]:
    """Every sample name the metric families of serving/metrics.py can expose."""
    from prometheus_client import REGISTRY

    import serving.metrics  # noqa: F401 - registers the families

    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("imgserve_"):
            names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
    return names


def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


# ---- Serve config and RayService ----


def test_serve_config_validates_with_rays_schema() -> None:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    assert [app.name for app in schema.applications] == ["imgserve"]


def test_local_placement_is_an_overlay_of_the_one_serve_config() -> None:
    """`imgserve serve` on one machine applies the local placement to serve_config.yaml: the Ingress alone (its
    replicas run every stage and the job loop), its own listeners on the ports the proxy would have used, the
    proxy disabled, greedy batching; everything else as in the file. The graph placement keeps every deployment
    and gets the same listeners."""
    from ray.serve.schema import ServeDeploySchema

    from serving.config.app_args import AppArgs
    from serving.config.placement_overlay import apply_placement

    default = yaml.safe_load(SERVE_CONFIG.read_text())
    local = apply_placement(default, "local")
    ServeDeploySchema.model_validate(local)
    assert local["proxy_location"] == "Disabled" and local["logging_config"] == default["logging_config"]
    app, default_app = local["applications"][0], default["applications"][0]
    args = AppArgs.model_validate(app["args"])
    assert args.placement == "local" and args.batching == {"batch_wait_timeout_ms": 0}
    assert args.direct_ingress is not None
    listeners = (args.direct_ingress.host, args.direct_ingress.http_port, args.direct_ingress.grpc_port)
    proxy = (default["http_options"]["host"], default["http_options"]["port"], default["grpc_options"]["port"])
    assert listeners == proxy
    changed = ("placement", "batching", "direct_ingress")
    assert {k: v for k, v in app["args"].items() if k not in changed} == {
        k: v for k, v in default_app["args"].items() if k != "placement"
    }
    assert [d["name"] for d in app["deployments"]] == ["Ingress"]
    assert app["deployments"][0]["ray_actor_options"]["num_cpus"] == 1
    graph = apply_placement(default, "graph")
    ServeDeploySchema.model_validate(graph)
    graph_args = graph["applications"][0]["args"]
    assert graph_args["placement"] == "graph" and graph_args["direct_ingress"] == app["args"]["direct_ingress"]
    assert graph["proxy_location"] == "Disabled"
    assert {**graph, "applications": None, "proxy_location": None} == {
        **default,
        "applications": None,
        "proxy_location": None,
    }
    assert graph["applications"][0]["deployments"] == default_app["deployments"]
    assert default == yaml.safe_load(SERVE_CONFIG.read_text()), "the overlay must not change its input"


def test_auto_placement_is_local_unless_ray_is_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.config.placement_overlay import choose_placement

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert choose_placement("auto")[0] == "local"
    assert choose_placement("graph")[0] == "graph"
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert choose_placement("auto")[0] == "graph"
    assert choose_placement("local")[0] == "local"


def test_app_args_reject_contradictions() -> None:
    from pydantic import ValidationError

    from serving.config.app_args import AppArgs

    AppArgs.model_validate({"placement": "local", "batching": {"batch_wait_timeout_ms": 0}})
    with pytest.raises(ValidationError, match="batching"):
        AppArgs.model_validate({"placement": "graph", "batching": {"batch_wait_timeout_ms": 0}})
    with pytest.raises(ValidationError, match="default_model"):
        AppArgs.model_validate({"models": ["quality_net"], "default_model": "mobilenet_v2_imagenet"})
    with pytest.raises(ValidationError):
        AppArgs.model_validate({"model_location": "ingress"})  # the old switch is gone, not silently ignored


def test_rendered_rayservice_is_current() -> None:
    rendered = deploy_render.render_files(SERVE_CONFIG, deploy_render.DEFAULT_TEMPLATE, OVERRIDES)
    assert RAYSERVICE.read_text() == rendered, (
        "deploy/kuberay/rayservice.yaml is stale: run .venv/bin/python -m serving.deploy_render "
        "--serve-config serve_config.yaml --out deploy/kuberay/rayservice.yaml"
    )


def _rayservice() -> dict[str, Any]:
    docs = [doc for doc in yaml.safe_load_all(RAYSERVICE.read_text()) if doc]
    return next(doc for doc in docs if doc["kind"] == "RayService")


def test_serve_config_v2_is_serve_config_plus_the_cluster_overrides() -> None:
    serve_config = yaml.safe_load(SERVE_CONFIG.read_text())
    overrides = yaml.safe_load(OVERRIDES.read_text())
    v2 = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])
    assert v2 == deploy_render.merge_config(serve_config, overrides)
    # What the overrides do not mention is serve_config.yaml's content unchanged.
    assert v2["applications"][0]["args"] == serve_config["applications"][0]["args"]
    assert [d["name"] for d in v2["applications"][0]["deployments"]] == [
        d["name"] for d in serve_config["applications"][0]["deployments"]
    ]
    assert v2["http_options"]["port"] == serve_config["http_options"]["port"]
    assert v2["http_options"]["host"] == "0.0.0.0"  # a pod's proxy must be reachable from its Service


def test_merge_config_merges_named_entries_and_rejects_unknown_names() -> None:
    base = {"a": {"b": 1, "c": 2}, "items": [{"name": "x", "v": 1, "o": {"k": 1}}, {"name": "y", "v": 2}]}
    merged = deploy_render.merge_config(base, {"a": {"c": 3}, "items": [{"name": "y", "v": 5}]})
    assert merged == {"a": {"b": 1, "c": 3}, "items": [{"name": "x", "v": 1, "o": {"k": 1}}, {"name": "y", "v": 5}]}
    assert base["items"][1]["v"] == 2  # inputs are not modified
    with pytest.raises(ValueError, match="'z'"):
        deploy_render.merge_config(base, {"items": [{"name": "z"}]})


def test_rayservice_has_cpu_and_gpu_worker_groups_with_probes_and_ports() -> None:
    spec = _rayservice()["spec"]
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    http_port, grpc_port = serve_config["http_options"]["port"], serve_config["grpc_options"]["port"]
    groups = {group["groupName"]: group for group in spec["rayClusterConfig"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for name, group in groups.items():
        container = group["template"]["spec"]["containers"][0]
        limits = container["resources"]["limits"]
        assert ("nvidia.com/gpu" in limits) == (name == "gpu")
        probe = container["readinessProbe"]["httpGet"]
        assert probe == {"path": "/v2/health/ready", "port": http_port}
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["serve"] == http_port and ports["grpc"] == grpc_port and ports["metrics"] == 8080
        assert {"name": "IMGSERVE_WEIGHTS_DIR", "value": "/weights"} in container["env"]
    head = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in head["ports"]}["serve"] == http_port
    # Model replicas ask for a GPU on the cluster, so they land in the gpu group.
    models = [d for d in serve_config["applications"][0]["deployments"] if d["name"].startswith("model-")]
    assert models and all(d["ray_actor_options"].get("num_gpus", 0) > 0 for d in models)


def test_render_cli_check_mode(tmp_path: Path) -> None:
    out = tmp_path / "rayservice.yaml"
    assert deploy_render.main(["--serve-config", str(SERVE_CONFIG), "--out", str(out)]) == 0
    assert deploy_render.main(["--serve-config", str(SERVE_CONFIG), "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("maxReplicas: 4", "maxReplicas: 5"))
    assert deploy_render.main(["--serve-config", str(SERVE_CONFIG), "--out", str(out), "--check"]) == 1


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.y*ml")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_deploy_yaml_parses(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} is empty"


# ---- Prometheus ----


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is absent: install the Debian package `prometheus` (.ci/run does)")
    return promtool


@pytest.mark.parametrize("config", PROMETHEUS_CONFIGS, ids=lambda p: p.name)
def test_promtool_check_config(config: Path, tmp_path: Path) -> None:
    promtool = _promtool()
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True)
    if result.returncode != 0 and "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else, with static targets.
        parsed = yaml.safe_load(config.read_text())
        parsed["rule_files"] = [str(config.parent / rule) for rule in parsed.get("rule_files", [])]
        for job in parsed["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
        copy = tmp_path / config.name
        copy.write_text(yaml.safe_dump(parsed))
        result = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_runbook_and_severity() -> None:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"page", "warning", "info"}, rule["alert"]
            runbook = rule["annotations"]["runbook"]
            for part in ("Meaning:", "Check:", "Act:"):
                assert part in runbook or "Check and act:" in runbook, f"{rule['alert']} runbook lacks {part}"


def test_required_slo_alerts_exist() -> None:
    names = {name for name, _ in alert_exprs()}
    expected = {"ImgserveLatencyP99OverSLO", "ImgserveErrorRatioHigh", "ImgserveQueueGrowing"}
    assert expected | {"ImgserveNoReadyReplicas", "ImgserveBatchFillLow"} <= names


# ---- Grafana ----


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = _all_panels(dashboard)
    assert panels
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dashboard["uid"] == "imgserve"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        title = panel.get("title")
        assert title, f"panel {panel['id']} has no title"
        assert set(panel["gridPos"]) >= {"h", "w", "x", "y"}, title
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, title
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["targets"], f"{title} has no targets"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["expr"].strip(), f"{title} has a target without expr"
            assert target["datasource"]["type"] == "prometheus", title


def test_dashboard_covers_the_required_views() -> None:
    exprs = " ".join(expr for _, expr in dashboard_exprs(json.loads(DASHBOARD.read_text())))
    for needle in (
        "rate(imgserve_requests_total",  # throughput, error ratio, burn rate
        "histogram_quantile(0.99, sum by (le, endpoint) (rate(imgserve_request_latency_seconds_bucket",
        "imgserve_batch_size_sum",
        "imgserve_batch_fill_ratio_sum",
        "ray_serve_deployment_replica_healthy",
        "ray_serve_deployment_queued_queries",
        "imgserve_stage_latency_seconds",
        "ray_node_cpu_utilization",
        "ray_node_gpus_utilization",
    ):
        assert needle in exprs, needle


def test_promql_metric_names_parser() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, endpoint) "
        '(rate(imgserve_request_latency_seconds_bucket{endpoint=~"/v1.*"}[$__rate_interval]))) > 0.5 '
        'and on (endpoint) sum(rate(foo:bar[5m] offset 1h30m)) / 1e3 or absent(up{job="x"})'
    )
    assert promql_metric_names(expr) == {"imgserve_request_latency_seconds_bucket", "foo:bar", "up"}


def test_every_metric_in_dashboard_and_alerts_exists() -> None:
    imgserve = imgserve_sample_names()
    assert "imgserve_requests_total" in imgserve and "imgserve_batch_size_bucket" in imgserve
    ray = known_ray_metrics()
    assert len(ray) > 50, "known_ray_metrics.txt looks truncated"
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text())) + alert_exprs()
    unknown = []
    for where, expr in exprs:
        names = promql_metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        for name in names:
            if name.startswith("imgserve_"):
                ok = name in imgserve
            elif name.startswith("ray_"):
                ok = name in ray
            else:
                ok = name in PROMETHEUS_SYNTHETIC
            if not ok:
                unknown.append(f"{where}: {name}")
    assert not unknown, "metrics that do not exist:\n" + "\n".join(unknown)


def test_ray_proxy_keeps_the_files_proxy_and_no_direct_listeners() -> None:
    from serving.config.placement_overlay import apply_placement

    default = yaml.safe_load(SERVE_CONFIG.read_text())
    for placement in ("graph", "local"):
        proxied = apply_placement(default, placement, ray_proxy=True)
        assert proxied["proxy_location"] == default["proxy_location"]
        assert "direct_ingress" not in proxied["applications"][0]["args"]
