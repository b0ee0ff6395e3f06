"""The progress streams' two caps answer differently: a tenant at its own cap is a client condition (429
`rate_limited`, not counted as a server error), the replica's total is the server's capacity (503 `overloaded`).

A hostile-client walkthrough opened 66 streams with one viewer key: 50 were refused 503 `overloaded` and counted
in `imgserve_errors_total{kind="overloaded"}`, which the availability alerts and error budget count, so one viewer
could burn the SLO."""

from collections import Counter
from typing import Any

import pytest
from prometheus_client import REGISTRY

from serving.http import progress_streams
from tests.unit.test_security_in_process import _submit, auth, world  # noqa: F401 - the module's fixture

pytestmark = pytest.mark.unit

PROGRESS = "/v1/jobs/{job_id}/progress"


def _errors(kind: str) -> float:
    return REGISTRY.get_sample_value("imgserve_errors_total", {"endpoint": PROGRESS, "kind": kind}) or 0.0


def test_a_tenant_at_its_stream_cap_gets_a_429_that_burns_no_error_budget(
    world: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = _submit(world, "a_analyst", seed=71)
    monkeypatch.setattr(
        progress_streams, "_tenant_streams", Counter({"a": progress_streams.MAX_TENANT_PROGRESS_STREAMS})
    )
    overloaded = _errors("overloaded")
    refused = world["http"].get(f"/v1/jobs/{job}/progress", headers=auth(world, "a_viewer"))
    assert refused.status_code == 429, refused.text
    assert refused.json()["kind"] == "rate_limited"
    assert "your tenant" in refused.json()["error"] and "poll the job" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    assert _errors("overloaded") == overloaded  # not a server error: the SLO's kinds are untouched


def test_the_replicas_stream_total_is_still_a_503_overloaded(
    world: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = _submit(world, "b_analyst", seed=72)
    monkeypatch.setattr(progress_streams, "_open_streams", progress_streams.MAX_PROGRESS_STREAMS)
    overloaded = _errors("overloaded")
    refused = world["http"].get(f"/v1/jobs/{job}/progress", headers=auth(world, "b_analyst"))
    assert refused.status_code == 503 and refused.json()["kind"] == "overloaded", refused.text
    assert "your tenant" not in refused.json()["error"]
    assert _errors("overloaded") == overloaded + 1
