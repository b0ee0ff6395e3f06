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
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"  # promtool rule unit tests
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
        AppArgs.model_validate({"models": ["quality_mos"], "default_model": "mobilenet_v2_imagenet"})
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


def _manifest(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RAYSERVICE.read_text()) if doc and doc["kind"] == kind]


def _ray_containers() -> dict[str, dict[str, Any]]:
    """The Ray container (containers[0]) of the head and of every worker group, by group name."""
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    groups = {"head": cluster["headGroupSpec"]}
    groups |= {group["groupName"]: group for group in cluster["workerGroupSpecs"]}
    return {name: group["template"]["spec"]["containers"][0] for name, group in groups.items()}


def test_rayservice_turns_ray_token_auth_and_imgserve_auth_on() -> None:
    """Ray's token auth from a Secret (KubeRay's authOptions: it generates the Secret, sets RAY_AUTH_MODE=token
    and RAY_AUTH_TOKEN on every Ray container, and authenticates its own dashboard calls); imgserve requires keys
    on every Ray container (the replicas run there); nothing turns either off."""
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    for name, container in _ray_containers().items():
        env = {var["name"]: var for var in container["env"]}
        assert env["IMGSERVE_AUTH"] == {"name": "IMGSERVE_AUTH", "value": "required"}, name
        assert env.get("RAY_AUTH_MODE", {}).get("value", "token") == "token", name
    assert "RAY_AUTH_MODE: disabled" not in RAYSERVICE.read_text()


def test_rayservice_publishes_only_the_serve_ports() -> None:
    """No Service of the manifest carries the dashboard or any other Ray port; the head's own Service (KubeRay's)
    stays in-cluster (no LoadBalancer/NodePort)."""
    spec = _rayservice()["spec"]
    serve_config = yaml.safe_load(spec["serveConfigV2"])
    serve_ports = {serve_config["http_options"]["port"], serve_config["grpc_options"]["port"]}
    services = _manifest("Service")
    assert services
    for service in services:
        ports = {port["port"] for port in service["spec"]["ports"]}
        assert ports <= serve_ports and 8265 not in ports, service["metadata"]["name"]
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    head = spec["rayClusterConfig"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and "headService" not in head
    assert not _manifest("Ingress") and "serveService" not in spec


def test_rayservice_network_policy() -> None:
    """Ingress to the pods: the serve ports from anywhere, everything from the RayService's own Ray pods, the
    dashboard from the KubeRay operator, the metrics ports from the monitoring namespace; nothing else."""
    (policy,) = _manifest("NetworkPolicy")
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "imgserve"}}
    assert spec["policyTypes"] == ["Ingress"]
    serve_config = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])
    serve_ports = {serve_config["http_options"]["port"], serve_config["grpc_options"]["port"]}
    rules = spec["ingress"]
    open_rules = [rule for rule in rules if "from" not in rule]
    assert len(open_rules) == 1 and {p["port"] for p in open_rules[0]["ports"]} == serve_ports
    by_peer = {yaml.safe_dump(rule["from"], sort_keys=True): rule for rule in rules if "from" in rule}
    ray_pods = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "imgserve", "ray.io/is-ray-node": "yes"}}}]
    assert "ports" not in by_peer[yaml.safe_dump(ray_pods, sort_keys=True)]  # Ray's ports: many are random
    operator = [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}
    ]
    assert [p["port"] for p in by_peer[yaml.safe_dump(operator, sort_keys=True)]["ports"]] == [8265]
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert {p["port"] for p in by_peer[yaml.safe_dump(monitoring, sort_keys=True)]["ports"]} == {8080, 9400}
    assert len(by_peer) == 3
    # Every pod the policy selects is a pod of the RayService, and every Ray pod carries the selected label.
    for container_group in _rayservice()["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        assert container_group["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "imgserve"


def test_metrics_sidecar_answers_only_its_bearer_token(tmp_path: Path) -> None:
    """The sidecar's own code, run here on a free loopback port: 401 without the Secret's token, 200 with it."""
    import os
    import sys
    import time

    import httpx

    from loadtests.server_process import free_port

    head = _rayservice()["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    sidecar = next(c for c in head["containers"] if c["name"] == "imgserve-metrics")
    assert {
        "name": "IMGSERVE_METRICS_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "imgserve-metrics", "key": "token"}},
    } in sidecar["env"]
    port = free_port()
    code = sidecar["args"][0]
    assert 'make_server("", 9400,' in code
    code = code.replace('make_server("", 9400,', f'make_server("127.0.0.1", {port},')
    env = {**os.environ, "IMGSERVE_METRICS_TOKEN": "s3cret\n", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while True:
            try:
                refused = httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, "the sidecar did not start"
                time.sleep(0.1)
        assert refused.status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=2).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=2).status_code == 200
    finally:
        proc.kill()
        proc.wait()


def test_dockerfile_binds_beyond_loopback_only_with_auth_required() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    env_block = re.search(r"^ENV (.+?)(?<!\\)\n", text, re.MULTILINE | re.DOTALL)
    assert env_block and "IMGSERVE_AUTH=required" in env_block.group(1)
    (cmd,) = re.findall(r"^CMD (.+)$", text, re.MULTILINE)
    args = json.loads(cmd)
    assert args[:2] == ["imgserve", "serve"] and args[args.index("--host") + 1] == "0.0.0.0"
    assert "serve_config.container.yaml" not in text and "IMGSERVE_AUTH=off" not in text


def test_render_cli_check_mode(tmp_path: Path) -> None:
    out = tmp_path / "rayservice.yaml"
    assert deploy_render.main(["--serve-config", str(SERVE_CONFIG), "--out", str(out)]) == 0
    assert deploy_render.main(["--serve-config", str(SERVE_CONFIG), "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("maxReplicas: 4", "maxReplicas: 5"))
    assert deploy_render.main(["--serve-config", str(SERVE_CONFIG), "--out", str(out), "--check"]) == 1


@pytest.mark.parametrize(
    ("config", "said"),
    [
        ("", "must be a mapping"),  # tracebacks before
        ("applications: [\n", "expected the node content"),
        ("MAX_INFLIGHT_0", "max_inflight"),  # rendered, then refused on the cluster as `imgserve serve` refuses it
    ],
)
def test_render_refuses_in_one_line_what_the_server_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, said: str
) -> None:
    if config == "MAX_INFLIGHT_0":
        loaded = yaml.safe_load(SERVE_CONFIG.read_text())
        loaded["applications"][0]["args"]["direct_ingress"] = {"max_inflight": 0}
        config = yaml.safe_dump(loaded)
    path = tmp_path / "serve_config.yaml"
    path.write_text(config)
    assert deploy_render.main(["--serve-config", str(path), "--out", str(tmp_path / "out.yaml")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and not (tmp_path / "out.yaml").exists(), lines


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
    """A copy of the config is checked: promtool insists the bearer token files exist (an operator key / the
    metrics Secret, made at deploy time), so they point at a file written here; everything else is as shipped."""
    promtool = _promtool()
    parsed = yaml.safe_load(config.read_text())
    parsed["rule_files"] = [str(config.parent / rule) for rule in parsed.get("rule_files", [])]
    (tmp_path / "token").write_text("test-token")
    for job in parsed["scrape_configs"]:
        if "credentials_file" in job.get("authorization", {}):
            job["authorization"]["credentials_file"] = str(tmp_path / "token")
    copy = tmp_path / config.name
    copy.write_text(yaml.safe_dump(parsed))
    result = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True)
    if result.returncode != 0 and "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else, with static targets.
        for job in parsed["scrape_configs"]:
            if job.pop("kubernetes_sd_configs", None) is not None:
                job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
        copy.write_text(yaml.safe_dump(parsed))
        result = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_imgserve_scrape_jobs_send_a_bearer_token() -> None:
    """/metrics needs an operator key (and the cluster's metrics sidecar its Secret's token): every imgserve job
    sends one; Ray's metrics port (loopback locally, NetworkPolicy in the cluster) takes none."""
    for config in PROMETHEUS_CONFIGS:
        jobs = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
        auth = jobs["imgserve"]["authorization"]
        assert auth["type"] == "Bearer" and Path(auth["credentials_file"]).is_absolute(), config.name
    monitors = [doc for doc in yaml.safe_load_all((DEPLOY / "prometheus" / "kubernetes.yml").read_text()) if doc]
    endpoints = {e["port"]: e for m in monitors if m["kind"] == "PodMonitor" for e in m["spec"]["podMetricsEndpoints"]}
    assert endpoints["app-metrics"]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "imgserve-metrics", "key": "token"},
    }


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
    assert expected | {"ImgserveNoReadyReplicas", "ImgserveBatchFillLow", "ImgserveQualityDrift"} <= names


def test_quality_drift_alert_compares_the_hour_with_the_week_per_tenant_and_tag() -> None:
    rules = {
        rule.get("alert"): rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    }
    drift = rules["ImgserveQualityDrift"]
    assert drift["labels"]["severity"] == "warning" and drift["for"] == "15m"
    expr = " ".join(drift["expr"].split())
    for needle in (
        'sum by (tenant, tag) (rate(imgserve_quality_tags_total{kind="defect"}[1h]))',
        'sum by (tenant, tag) (rate(imgserve_quality_tags_total{kind="defect"}[7d]))',
        "sum by (tenant) (rate(imgserve_quality_images_total[1h]))",
        "sum by (tenant) (rate(imgserve_quality_images_total[7d]))",
        "> 3 *",
        "sum by (tenant) (increase(imgserve_quality_images_total[1h])) >= 100",
    ):
        assert needle in expr, needle
    assert "{{ $labels.tag }}" in drift["annotations"]["summary"]
    assert "{{ $labels.tenant }}" in drift["annotations"]["summary"]


def test_promtool_rule_unit_tests() -> None:
    """deploy/prometheus/alerts_test.yml: blurry rising from 5 % to 30 % of a tenant's images fires the drift
    alert; a steady tenant, a low-volume one and a rare new tag do not."""
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    tested = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])}
    assert "ImgserveQualityDrift" in tested
    result = subprocess.run([_promtool(), "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


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
        if panel["type"] == "row":  # a row header: no query of its own
            assert "targets" not in panel and panel["gridPos"]["w"] == 24, title
            continue
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
        "imgserve_model_inference_seconds_total",  # per model version: a canary beside the served version
        "ray_node_cpu_utilization",
        "ray_node_gpus_utilization",
    ):
        assert needle in exprs, needle


def test_dashboard_quality_row() -> None:
    """A "Quality" row with tag shares over time, the score distribution, the level mix and the drift ratio, all
    filtered by a tenant variable (default All)."""
    dashboard = json.loads(DASHBOARD.read_text())
    top = dashboard["panels"]
    rows = [i for i, panel in enumerate(top) if panel["type"] == "row"]
    (start,) = [i for i in rows if top[i]["title"] == "Quality"]
    end = min([i for i in rows if i > start] or [len(top)])
    quality = top[start + 1 : end]
    row_y = top[start]["gridPos"]["y"]
    assert quality and all(panel["gridPos"]["y"] > row_y for panel in quality)
    assert all(panel["gridPos"]["y"] < row_y for panel in top[:start]), "the row must come after the panels above"
    exprs = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in quality}
    assert all('tenant=~"$tenant"' in expr for expr in exprs.values()), exprs
    joined = " ".join(exprs.values())
    for needle in (
        "sum by (tag) (rate(imgserve_quality_tags_total",
        "sum by (level) (rate(imgserve_quality_level_total",
        "sum by (le) (increase(imgserve_quality_score_bucket",
        "imgserve_quality_images_total",
        "[7d]",
    ):
        assert needle in joined, needle
    types = {panel["type"] for panel in quality}
    assert {"timeseries", "heatmap"} <= types
    heatmaps = [t for panel in quality if panel["type"] == "heatmap" for t in panel["targets"]]
    assert heatmaps and all(t["format"] == "heatmap" for t in heatmaps)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    tenant = variables["tenant"]
    assert tenant["includeAll"] and tenant["allValue"] == ".*" and tenant["current"]["value"] == ["$__all"]
    assert "imgserve_quality_images_total" in tenant["query"]["query"]


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


def test_every_port_name_is_a_valid_kubernetes_port_name() -> None:
    """The metrics sidecar's port was named `imgserve-metrics`: 16 characters, and Kubernetes refuses a pod whose
    port name is longer than 15 (IANA_SVC_NAME), so no pod of the RayService could be created."""
    import re

    valid = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$")
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    names = {p["name"] for t in templates for c in t["spec"]["containers"] for p in c.get("ports", [])}
    assert "app-metrics" in names and all(valid.match(name) for name in names), names
    for path in (DEPLOY / "prometheus" / "kubernetes.yml", DEPLOY / "prometheus" / "prometheus-kubernetes.yml"):
        assert "app-metrics" in path.read_text(), path  # the scrape configs find the sidecar by that name


def test_the_grpc_proxy_on_kubernetes_has_the_servers_message_limit() -> None:
    """Without RAY_SERVE_GRPC_MAX_MESSAGE_SIZE Ray's proxy takes 2 GiB messages, not IMGSERVE_MAX_REQUEST_BYTES."""
    from serving.config.settings import ServerSettings

    for name, container in _ray_containers().items():
        env = {e["name"]: e.get("value") for e in container["env"]}
        limit = ServerSettings.model_fields["max_request_bytes"].default
        assert env.get("RAY_SERVE_GRPC_MAX_MESSAGE_SIZE") == str(limit), name
