"""The queue alert and the queue panel see queues in every placement.

The local placement (what `make serve` runs) answers on direct listeners that call no Serve handle, so Ray never
exports `ray_serve_deployment_queued_queries` or `ray_serve_num_ongoing_requests_at_replicas` there: a real scrape
after classify, analyze, batch and convert traffic had neither. A query that reads only such series is blind under
`make serve`; each one also reads an imgserve_* series (`imgserve_batch_queue_depth`, `imgserve_inflight_requests`)
that every placement exports. promtool runs the alert cases (deploy/prometheus/alerts_test.yml).
"""

import json
from collections import defaultdict

import pytest

from tests.unit.test_deploy_configs import (
    DASHBOARD,
    _all_panels,
    alert_exprs,
    imgserve_sample_names,
    known_ray_metrics,
    promql_metric_names,
)

pytestmark = pytest.mark.unit

HANDLE_ONLY = {"ray_serve_deployment_queued_queries", "ray_serve_num_ongoing_requests_at_replicas"}


def _serve_handle_only() -> set[str]:
    return {name for name, flags in known_ray_metrics().items() if "serve-handle" in flags}


def test_known_ray_metrics_flags_the_series_the_local_placement_never_exports() -> None:
    assert HANDLE_ONLY <= _serve_handle_only()


def _queries() -> dict[str, set[str]]:
    """Metric names each alert and each dashboard panel reads (a panel's targets together)."""
    names: dict[str, set[str]] = defaultdict(set)
    for alert, expr in alert_exprs():
        names[f"alert {alert}"] |= promql_metric_names(expr)
    for panel in _all_panels(json.loads(DASHBOARD.read_text())):
        for target in panel.get("targets", []):
            names[f"panel {panel['title']}"] |= promql_metric_names(target["expr"])
    return names


def test_every_alert_and_panel_reads_a_series_the_local_placement_exports() -> None:
    handle_only = _serve_handle_only() | HANDLE_ONLY
    blind = {where: sorted(names) for where, names in _queries().items() if names and names <= handle_only}
    assert not blind, f"blind under `make serve` (the local placement): {blind}"


def test_the_queue_alert_and_panel_read_the_batch_queue_gauge() -> None:
    assert "imgserve_batch_queue_depth" in imgserve_sample_names()
    queries = _queries()
    assert "imgserve_batch_queue_depth" in queries["alert ImgserveQueueGrowing"]
    queue_panels = [names for where, names in queries.items() if where.startswith("panel ") and names & HANDLE_ONLY]
    assert queue_panels and all("imgserve_batch_queue_depth" in names for names in queue_panels)
