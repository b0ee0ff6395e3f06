"""`/metrics` over several processes (prometheus_client's multiprocess mode, as the replicas write it): a gauge a
process only imports does not exist there, and the live gauges of processes that are gone are dropped."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import render_metrics

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def start(code: str, directory: Path) -> subprocess.Popen[str]:
    """A Python process writing metrics into `directory`; it runs `code`, says ready and waits for its stdin."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    script = f"{code}\nprint('ready', flush=True)\nimport sys\nsys.stdin.read()"
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=30)


def samples(directory: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    body, _ = render_metrics()
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "multiproc"
    folder.mkdir()
    yield folder


def test_the_job_store_gauge_is_one_while_the_store_answers(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process importing serving.jobs.metrics (the graph's Ingress, Serve's app-build worker) wrote a 0 that
    the `livemin` mode kept: the documented outage signal read 0 on a healthy server."""
    importer = start("import serving.jobs.metrics, serving.jobs.outage", directory)
    worker = start("from serving.jobs.outage import StoreCalls\ncalls = StoreCalls()", directory)
    try:
        assert samples(directory, monkeypatch)["imgserve_batch_store_up[]"] == 1.0
        failing = start("from serving.jobs.outage import StoreCalls\nStoreCalls().failed(OSError('down'))", directory)
        assert samples(directory, monkeypatch)["imgserve_batch_store_up[]"] == 0.0  # an outage shows while it lasts
        stop(failing)  # a worker restarted during the outage: its 0 goes with it
        assert samples(directory, monkeypatch)["imgserve_batch_store_up[]"] == 1.0
    finally:
        stop(importer)
        stop(worker)


def test_live_gauges_of_processes_that_are_gone_are_dropped(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica that restarted or scaled down kept counting in `imgserve_model_info` and its requests stayed in
    flight in `imgserve_inflight_requests`; counters of the dead process stay, as they must."""
    code = (
        "from serving.metrics import INFLIGHT, MODEL_INFO, REQUESTS\n"
        "MODEL_INFO.labels('m', '1', 'onnxruntime', 'cpu', 'fp32').inc()\n"
        "INFLIGHT.labels('http').inc()\n"
        "REQUESTS.labels('/v1/classify', 'http', 'm', '200').inc()"
    )
    alive, gone = start(code, directory), start(code, directory)
    try:
        stop(gone)
        seen = samples(directory, monkeypatch)
        info = "imgserve_model_info" + str(
            sorted(
                {"backend": "onnxruntime", "device": "cpu", "model": "m", "precision": "fp32", "version": "1"}.items()
            )
        )
        assert seen[info] == 1.0 and seen["imgserve_inflight_requests[('protocol', 'http')]"] == 1.0
        labels = {"endpoint": "/v1/classify", "model": "m", "protocol": "http", "status": "200"}
        requests = "imgserve_requests_total" + str(sorted(labels.items()))
        assert seen[requests] == 2.0
    finally:
        stop(alive)
