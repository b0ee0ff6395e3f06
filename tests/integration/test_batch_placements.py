"""A batch job in each placement: the local one runs the job loop in the Ingress replica over its own stages (no
second copy of the models), the graph one in the BatchWorker deployment over the stage deployments."""

import time

import httpx
import pytest

from loadtests.server_process import ServerProcess
from tests.paths import IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("placement", ["graph", "local"])
def test_a_batch_job_runs_each_item_once(placement: str, server: ServerProcess, local_server: ServerProcess) -> None:
    server = server if placement == "graph" else local_server
    photo = (require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG").read_bytes()
    files = [("image", (f"p{i}.jpg", photo)) for i in range(3)] + [("image", ("bad.jpg", b"\xff\xd8broken"))]
    with httpx.Client(base_url=server.http_url, timeout=60) as client:
        submitted = client.post("/v1/batch", files=files, params={"stages": "classification,quality"})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        deadline = time.monotonic() + 120
        while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        assert job["status"] == "completed" and job["counts"]["done"] == 3 and job["counts"]["failed"] == 1, job
        assert job["attempts"] == 4, job
        results = client.get(f"/v1/jobs/{job_id}/results").text
    assert results.count("streetcar") == 3 and "invalid_image" in results, results[:800]
