"""Triton's statistics on the real server, read by tritonclient 2.73 over HTTP and gRPC: in the graph placement the
classifier's batches run in a deployment of their own (another process), so the figures are the node's, summed
as `/metrics` sums them; in the local placement they run in the Ingress replica."""

from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from tests.integration.conftest import RunningServer
from tests.paths import IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration

MODEL = "mobilenet_v2_imagenet"


@pytest.fixture(scope="module", params=["graph", "local"])
def target(request: pytest.FixtureRequest, server: RunningServer, local_server: RunningServer) -> RunningServer:
    return server if request.param == "graph" else local_server


def test_the_classifier_counts_every_image_it_ran(target: RunningServer) -> None:
    http_client = triton_http.InferenceServerClient(target.http_url.removeprefix("http://"))
    grpc_client = triton_grpc.InferenceServerClient(target.grpc_target)

    def row(model: str) -> dict[str, Any]:
        [figures] = http_client.get_inference_statistics(model)["model_stats"]
        return figures

    before, image_level = row(MODEL), row("classify")
    photo = (require(IMAGENET_SAMPLES) / "n04335435_streetcar.JPEG").read_bytes()
    files = [("image", (f"{i}.jpg", photo, "image/jpeg")) for i in range(3)]
    answered = httpx.post(f"{target.http_url}/v1/classify", files=files, timeout=60)  # the image API: 3 images
    assert answered.status_code == 200 and len(answered.json()["results"]) == 3
    tensor = triton_http.InferInput("input", [2, 3, 224, 224], "FP32")  # OIP: a tensor of 2 rows
    tensor.set_data_from_numpy(np.zeros((2, 3, 224, 224), np.float32))
    http_client.infer(MODEL, [tensor])
    images = triton_http.InferInput("IMAGE", [1], "BYTES")  # the image-level model: 1 image
    images.set_data_from_numpy(np.array([photo], dtype=np.object_))
    http_client.infer("classify", [images])

    after = row(MODEL)
    assert after["inference_count"] - before["inference_count"] == 6
    ran = after["execution_count"] - before["execution_count"]
    assert 2 <= ran <= 6  # the OIP tensor is one batch of its own; the images may share
    stats, was = after["inference_stats"], before["inference_stats"]
    assert stats["success"]["count"] - was["success"]["count"] == 6 and stats["fail"] == was["fail"]
    spent = {phase: stats[phase]["ns"] - was[phase]["ns"] for phase in ("success", "queue", "compute_infer")}
    assert spent["compute_infer"] > 0 and spent["success"] >= spent["queue"] + spent["compute_infer"]
    assert after["last_inference"] > before["last_inference"]
    assert row("classify")["inference_count"] - image_level["inference_count"] == 1
    over_grpc = grpc_client.get_inference_statistics(MODEL).model_stats[0]  # nothing ran in between
    assert over_grpc.inference_count == after["inference_count"]
    assert over_grpc.execution_count == after["execution_count"]
    assert over_grpc.inference_stats.compute_infer.ns == stats["compute_infer"]["ns"]
    listed = {figures["name"] for figures in http_client.get_inference_statistics()["model_stats"]}
    assert {MODEL, "classify", "quality_mos"} <= listed
