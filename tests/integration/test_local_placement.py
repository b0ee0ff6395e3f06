"""The local placement for real, as `make serve` runs it: every stage inside the Ingress replica, which serves
HTTP and gRPC on its own listeners (no Ray Serve proxy), and the batch-job loop beside them.

The session `server` runs the graph placement (`--placement graph`); `local_server` runs `imgserve serve` with no
placement flag, and this module checks that it chose local and that the same API answers the same way: accuracy,
analysis with every stage, gRPC, errors that leave the replica serving, dynamic batching of concurrent requests
in-process, backpressure on the listeners.
tests/integration/test_grpc.py runs its whole suite against both servers.
"""

import asyncio
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from loadtests.server_process import ServerProcess
from serving.client import Client
from tests.integration.conftest import LOCAL_MAX_INFLIGHT, correct_top1
from tests.paths import IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration

MODEL_LABEL = 'model="mobilenet_v2_imagenet"'
OVERLOAD_LABELS = 'endpoint="(admission)",kind="overloaded"'
SAMPLE = 200  # first sorted photos: enough to see a broken pipeline, cheap on 2 cores


@pytest.fixture(scope="module")
def client(local_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_server.http_url, timeout=60) as http:
        yield http


def test_imgserve_serve_chose_the_local_placement_and_says_so(local_server: ServerProcess) -> None:
    # The replica answers /v2/health/ready (the fixture's readiness) a moment before `imgserve serve` prints its
    # ready banner (once serve.run returns): wait for the line, do not race it.
    deadline = time.monotonic() + 60
    while "imgserve is ready" not in (log := local_server.tail(200_000)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "placement local (Ray is local" in log and "(placement local, auth OFF (loopback only))" in log


def test_only_the_ingress_runs_the_models(client: httpx.Client) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["mobilenet_v2_imagenet"]["state"] == "READY"
    assert models["mobilenet_v2_imagenet"]["backend"]["backend"] == "onnxruntime"
    assert models["mobilenet_v2_imagenet"]["backend"]["batching"]["batch_wait_timeout_ms"] == 0


def test_top1_on_real_photos_and_concurrent_requests_share_batches(client: httpx.Client) -> None:
    files = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[:SAMPLE]
    correct = correct_top1(client, files, workers=32)
    # The model card's 88.8 % is over all 1000; 200 photos leave room for sampling noise, not for a broken path.
    assert correct / len(files) >= 0.83, f"{correct}/{len(files)}"
    metrics = client.get("/metrics").text
    count = _sample(metrics, "imgserve_batch_size_count", MODEL_LABEL)
    total = _sample(metrics, "imgserve_batch_size_sum", MODEL_LABEL)
    assert count > 0 and total >= SAMPLE
    assert total > count, "32 concurrent clients never shared a batch: in-process batching is not working"


def _sample(text: str, name: str, labels: str) -> float:
    """The value of `name{labels}` (labels exactly as Prometheus prints them) in a /metrics page, 0 if absent."""
    pattern = re.compile(rf"^{re.escape(name + '{' + labels + '}')} ([0-9.e+]+)$", re.M)
    return sum(float(m) for m in pattern.findall(text))


def test_analyze_runs_every_stage_from_one_request(client: httpx.Client) -> None:
    photo = (require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG").read_bytes()
    response = client.post("/v1/analyze", content=photo, params={"top_k": 1})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["classification"]["predictions"][0]["label"].startswith("streetcar")
    assert 0 <= result["quality"]["score"] <= 100 and result["quality"]["level"]
    assert 0.0 <= result["anomaly"]["score"] <= 1.0
    assert result["metadata"]["image"]["width"] > 0


def test_grpc_and_bad_input_leave_the_replica_serving(local_server: ServerProcess, client: httpx.Client) -> None:
    photo = (require(IMAGENET_SAMPLES) / "n03249569_drum.JPEG").read_bytes()
    truncated = client.post("/v1/classify", content=photo[: len(photo) // 3])
    assert truncated.status_code == 400 and truncated.json()["error"]
    assert client.post("/v1/classify", content=b"not an image").status_code in (400, 415)
    with Client(f"grpc://{local_server.grpc_target}") as grpc_client:
        [result] = grpc_client.classify([photo], top_k=1)
    assert result.top is not None and result.top.label.startswith("drum")


def test_direct_listeners_refuse_overload_with_json_503_and_keep_serving(
    local_server: ServerProcess, client: httpx.Client
) -> None:
    photo = (require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG").read_bytes()
    before = _sample(client.get("/metrics").text, "imgserve_errors_total", OVERLOAD_LABELS)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(base_url=local_server.http_url, timeout=120, limits=limits) as http:
            requests = [http.post("/v1/classify", content=photo) for _ in range(6 * LOCAL_MAX_INFLIGHT)]
            return await asyncio.gather(*requests)

    responses = asyncio.run(burst())
    statuses = {r.status_code for r in responses}
    assert statuses == {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.json()["kind"] == "overloaded" for r in refused)
    after = _sample(client.get("/metrics").text, "imgserve_errors_total", OVERLOAD_LABELS)
    assert after - before == len(refused)
    # Probes are answered at any load, and the replica serves normally once the burst is over.
    assert client.get("/v2/health/ready").status_code == 200
    assert client.post("/v1/classify", content=photo).status_code == 200


def test_with_auth_off_only_loopback_hosts_and_origins_are_answered(local_server: ServerProcess) -> None:
    """DNS rebinding and cross-site posts reach a loopback server through a browser; with no key to ask for, the
    listener answers only requests addressed to a loopback name (serving/http/host_guard.py)."""
    url = local_server.http_url
    assert httpx.get(f"{url}/v1/models", timeout=30).status_code == 200
    rebound = httpx.get(f"{url}/v1/jobs", headers={"Host": "rebound.example"}, timeout=30)
    assert rebound.status_code == 403 and rebound.json()["kind"] == "forbidden_host", rebound.text
    posted = httpx.post(f"{url}/v1/batch", headers={"Origin": "https://evil.example"}, files=[], timeout=30)
    assert posted.status_code == 403 and posted.json()["kind"] == "forbidden_host", posted.text
