"""A job's status names its tenant: operators and admins read every tenant's jobs but change only their own, and the
web UI offers Cancel / Purge / Save as collection only on the caller's own."""

import pytest

from serving.jobs.records import JobRecord
from serving.jobs.schemas import JobStatus, job_status

pytestmark = pytest.mark.unit


def test_the_status_carries_the_jobs_tenant() -> None:
    job = JobRecord(
        id="j1", status="completed", model="m", top_k=3, stages=("quality",), webhook_url=None,
        webhook_state="none", total=2, error=None, created_at=1.0, started_at=2.0, finished_at=3.0,
        counts={"done": 2}, tenant="tenant-b",
    )  # fmt: skip
    status = job_status(job, now=4.0)
    assert status.tenant == "tenant-b"
    assert status.model_dump()["tenant"] == "tenant-b"  # in the GET answer and each progress event
    assert JobStatus.model_json_schema()["properties"]["tenant"]["type"] == "string"  # documented in /openapi.json
