"""The availability SLO counts a server error by its kind, the same over HTTP and gRPC; the dashboard's and the alerts'
PromQL select only labels the imgserve_* families have.

Were: the availability alerts and panels selected `imgserve_requests_total{status=~"5..|INTERNAL|UNAVAILABLE|..."}`.
One status is several kinds (serving/errors.py): gRPC RESOURCE_EXHAUSTED is `overloaded` and `storage_full` (server
faults) but also `too_large` and `rate_limited` (client errors), so an overload refused over gRPC burned no error
budget while the same refusal over HTTP (503) did; HTTP 503 is also a readiness probe's "not ready", so a rollout
with no traffic paged at 100 % errors; DEADLINE_EXCEEDED (kind `timeout`, HTTP 408: a body that did not arrive in
time) counted over gRPC only. deploy/prometheus/alerts_test.yml has the promtool cases; this file ties the kind
list to the code's error classes.
"""

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.paths import PROJECT_ROOT
from tests.unit.test_deploy_configs import promql_metric_names

pytestmark = pytest.mark.unit

DEPLOY = PROJECT_ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "imgserve.json"
AVAILABILITY_ALERTS = ("ImgserveErrorRatioHigh", "ImgserveErrorBudgetFastBurn")
AVAILABILITY_PANELS = ("Server error ratio (range)", "Error ratio by endpoint", "SLO burn rate (99 % availability)")
# 5xx kinds that are not an availability failure: model control the graph placement does not offer (HTTP 501 /
# gRPC UNIMPLEMENTED), refused the same way every time whatever the load.
NOT_SERVER_FAULTS = {"unsupported"}
# Labels Prometheus adds at scrape time (the Kubernetes configs add namespace and pod).
TARGET_LABELS = {"job", "instance", "namespace", "pod"}


def error_kinds_in_code() -> dict[str, int]:
    """Every error kind serving/ and pipelines/ answer with, and its HTTP status: class attributes of the error
    classes (inherited ones resolved by base-class name) and the `ErrorInfo(status, code, kind, ...)` literals."""
    classes: dict[str, tuple[list[str], dict[str, object]]] = {}
    kinds: dict[str, int] = {}
    for path in [*(PROJECT_ROOT / "serving").rglob("*.py"), *(PROJECT_ROOT / "pipelines").rglob("*.py")]:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                attrs = {
                    target.id: stmt.value.value
                    for stmt in node.body
                    if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
                    for target in stmt.targets
                    if isinstance(target, ast.Name) and target.id in ("http_status", "kind")
                }
                classes[node.name] = (bases, attrs)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ErrorInfo" and len(node.args) >= 3:
                status, kind = node.args[0], node.args[2]
                if isinstance(status, ast.Constant) and isinstance(kind, ast.Constant):
                    kinds[kind.value] = status.value

    def resolved(name: str, attr: str, seen: frozenset[str] = frozenset()) -> object:
        if name not in classes or name in seen:
            return None
        bases, attrs = classes[name]
        if attr in attrs:
            return attrs[attr]
        return next((v for b in bases if (v := resolved(b, attr, seen | {name})) is not None), None)

    for name in classes:
        status, kind = resolved(name, "http_status"), resolved(name, "kind")
        if isinstance(status, int) and isinstance(kind, str):
            kinds[kind] = status
    return kinds


def _alert_exprs() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule}


def _panels() -> list[dict]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]


def _availability_exprs() -> dict[str, str]:
    alerts = _alert_exprs()
    found = {name: alerts[name] for name in AVAILABILITY_ALERTS}
    panels = {panel["title"]: panel for panel in _panels()}
    for title in AVAILABILITY_PANELS:
        for target in panels[title]["targets"]:
            found[f"{title} {target['refId']}"] = target["expr"]
    return found


def _server_error_kind_regex() -> str:
    """The one `kind=~"..."` regex every availability expression selects its errors with."""
    regexes = {
        match
        for expr in _availability_exprs().values()
        for match in re.findall(r'imgserve_errors_total\{[^}]*?kind=~"([^"]+)"', expr)
    }
    assert len(regexes) == 1, regexes
    return regexes.pop()


def test_the_code_knows_server_and_client_error_kinds() -> None:
    kinds = error_kinds_in_code()
    assert kinds["overloaded"] == 503 and kinds["internal"] == 500 and kinds["storage_full"] == 507
    assert kinds["timeout"] == 408 and kinds["too_large"] == 413 and kinds["rate_limited"] == 429
    assert kinds["unsupported"] == 501 and kinds["invalid_image"] == 400


def test_availability_counts_every_server_fault_kind_and_no_other() -> None:
    """The kind regex matches exactly the kinds the code answers with a 5xx (less NOT_SERVER_FAULTS), whichever
    protocol carried them: an error class added with a 5xx must be added to the alerts too."""
    regex = re.compile(_server_error_kind_regex())  # Prometheus anchors label regexes: fullmatch
    kinds = error_kinds_in_code()
    server = {kind for kind, status in kinds.items() if status >= 500} - NOT_SERVER_FAULTS
    assert server >= {"internal", "overloaded", "model_unavailable", "storage_full", "store_unavailable"}
    assert {kind for kind in kinds if regex.fullmatch(kind)} == server
    assert regex.fullmatch("http_503") and not regex.fullmatch("http_404")  # Starlette's HTTPException kinds


def test_the_series_made_at_zero_are_the_server_fault_kinds() -> None:
    """serving.metrics.SERVER_ERROR_KINDS (each endpoint's series made at 0 when a replica starts, so the first
    errors of a kind count in `rate`) are the alerts' kinds, less Starlette's http_5xx."""
    from serving.metrics import SERVER_ERROR_KINDS, render_metrics, zero_server_errors

    kinds = error_kinds_in_code()
    assert set(SERVER_ERROR_KINDS) == {kind for kind, status in kinds.items() if status >= 500} - NOT_SERVER_FAULTS
    zero_server_errors(["/v1/zero-test"])
    text = render_metrics()[0].decode()
    for kind in SERVER_ERROR_KINDS:
        assert f'imgserve_errors_total{{endpoint="/v1/zero-test",kind="{kind}"}} 0.0' in text, kind


def test_availability_never_selects_by_status() -> None:
    """A status names several kinds (gRPC RESOURCE_EXHAUSTED: overloaded and rate_limited; HTTP 503: overloaded
    and a readiness probe's not-ready), so the numerator must not select on it; the denominator is every
    answered API request."""
    for where, expr in _availability_exprs().items():
        assert "status" not in expr, where
        assert "imgserve_errors_total{" in expr and "imgserve_requests_total{" in expr, where


# Requests that are not API requests: health probes (a readiness probe every 5 s per pod, always 200, diluted the
# ratio: 1.5 % of inference requests failing read as 0.8 % at 1 request/s and 4 pods), the web UI's files, the
# API docs and paths no route matches.
NOT_API = {"/v2/health/ready", "/v2/health/live", "ServerLive", "ServerReady", "/ui", "/ui/", "/ui/app.js", "/docs",
           "/openapi.json", "unmatched"}  # fmt: skip
API = {"/v1/classify", "/v1/analyze", "/v1/batch", "/v2/models/{model}/infer", "Classify", "ModelInfer", "(shed)",
       "(admission)", "/v1/jobs/{job_id}"}  # fmt: skip


def test_availability_leaves_probes_and_ui_files_out_of_both_sides() -> None:
    """Every requests_total selector of an availability expression, and every errors_total one that does not name
    its endpoint, leave out exactly the non-API endpoints, with one regex."""
    selectors = set()
    for where, expr in _availability_exprs().items():
        for name, matchers in re.findall(r"\b(imgserve_(?:requests|errors)_total)\{([^}]*)\}", expr):
            if 'endpoint="' in matchers:
                continue  # "(admission)" refusals, by name
            found = re.findall(r'endpoint!~"([^"]+)"', matchers)
            assert len(found) == 1, f"{where}: {name} selects every endpoint"
            selectors.add(found[0])
    assert len(selectors) == 1, selectors
    regex = re.compile(selectors.pop())
    assert {e for e in NOT_API | API if regex.fullmatch(e)} == NOT_API


def _family_labels() -> dict[str, set[str]]:
    """Sample name -> label names, for every imgserve_* family the server registers."""
    from prometheus_client import REGISTRY

    import serving.jobs.metrics  # noqa: F401 - registers the batch-job families
    import serving.metrics  # noqa: F401 - registers the families

    labels: dict[str, set[str]] = {}
    for collector, names in REGISTRY._collector_to_names.items():  # noqa: SLF001 - no public way to list labels
        for name in names:
            if name.startswith("imgserve_"):
                extra = {"le"} if name.endswith("_bucket") else set()
                labels[name] = set(getattr(collector, "_labelnames", ())) | extra
    return labels


def _all_exprs() -> list[tuple[str, str]]:
    exprs = [(f"alert {name}", expr) for name, expr in _alert_exprs().items()]
    return exprs + [(f"panel {p['title']}", t["expr"]) for p in _panels() for t in p.get("targets", [])]


def test_every_label_a_query_names_exists_on_its_imgserve_metric() -> None:
    """Label matchers on an imgserve_* selector name labels of that family; `by`/`on`/`ignoring` clauses of a
    query over imgserve_* series only name labels one of its families has (a misspelt label selects nothing, or
    groups everything into one series, and Prometheus accepts it silently)."""
    families = _family_labels()
    assert families["imgserve_requests_total"] == {"endpoint", "protocol", "model", "status"}
    problems = []
    for where, expr in _all_exprs():
        text = re.sub(r"\$\{?\w+\}?", "x", expr)
        for name, matchers in re.findall(r"\b(imgserve_[a-z_]+)\s*\{([^}]*)\}", text):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                if label not in families.get(name, set()) | TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label!r}")
        names = promql_metric_names(expr)
        if not names or not all(name.startswith("imgserve_") for name in names):
            continue  # Ray's series: their labels are Ray's (deploy/grafana/known_ray_metrics.txt lists names only)
        available = set().union(*(families.get(name, set()) for name in names)) | TARGET_LABELS
        for clause in re.findall(r"\b(?:by|on|ignoring|without)\s*\(([^)]*)\)", text):
            for label in filter(None, (part.strip() for part in clause.split(","))):
                if label not in available:
                    problems.append(f"{where}: no imgserve_* metric of the query has the label {label!r}")
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    for variable in variables:
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else ""
        for name, label in re.findall(r"label_values\(\s*(imgserve_[a-z_]+)\s*,\s*(\w+)", query):
            if label not in families.get(name, set()):
                problems.append(f"variable {variable['name']}: {name} has no label {label!r}")
    assert not problems, "\n".join(problems)


def test_label_check_catches_a_misspelt_label(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The check above is not vacuous: a dashboard grouping by a label the family lacks is reported."""
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][0]["targets"][0]["expr"] = "sum by (endpoints) (rate(imgserve_requests_total[5m]))"
    broken = tmp_path / "imgserve.json"
    broken.write_text(json.dumps(dashboard))
    monkeypatch.setattr(sys.modules[__name__], "DASHBOARD", broken)
    with pytest.raises(AssertionError, match="endpoints"):
        test_every_label_a_query_names_exists_on_its_imgserve_metric()


# What Grafana puts in for its variables when it sends a query (any valid value will do for a syntax check).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s", "$tenant": ".*"}


def _check_as_rules(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is absent: install the Debian package `prometheus`")
    rules = []
    for i, expr in enumerate(exprs):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard_expr_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    """Each panel's query, as a recording rule through `promtool check rules`: a PromQL syntax error (an unbalanced
    parenthesis, a matcher Grafana's editor accepted) shows here, not only against a live Prometheus
    (tests/integration/test_prometheus.py)."""
    exprs = [t["expr"] for p in _panels() for t in p.get("targets", [])]
    assert len(exprs) > 30
    result = _check_as_rules(exprs, tmp_path)
    assert result.returncode == 0 and f"{len(exprs)} rules found" in result.stdout, result.stdout + result.stderr
    broken = _check_as_rules(["sum by (endpoint) (rate(imgserve_requests_total[5m])"], tmp_path)
    assert broken.returncode != 0  # the check is not vacuous


def test_grpc_server_live_is_counted_as_http_live_is() -> None:
    """HTTP /v2/health/live and gRPC ServerReady were counted in imgserve_requests_total, gRPC ServerLive not. In a
    subprocess: the generated OIP stubs clash with tritonclient's in this process (tests/unit/test_model_control.py)."""
    script = (
        "import asyncio\n"
        "from serving.grpc.oip_methods import OipGrpcMethods\n"
        "from serving.metrics import REQUESTS\n"
        "counted = REQUESTS.labels('ServerLive', 'grpc', '', 'OK')\n"
        "before = counted._value.get()\n"
        "answer = asyncio.run(OipGrpcMethods().ServerLive(object()))\n"
        "print(answer.live, counted._value.get() - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.stdout.split() == ["True", "1.0"], done.stderr
