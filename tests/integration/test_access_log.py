"""Structured access log and request-id propagation over HTTP and gRPC."""

import json
import time

import grpc
import httpx
import pytest

from serving.grpc.stubs import load
from tests.integration.conftest import RunningServer
from tests.paths import IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration

pb = load("image_service_pb2")
pb_grpc = load("image_service_pb2_grpc")


def _lines_with(server: RunningServer, request_id: str, timeout_s: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.access_log.exists():
            lines = [json.loads(line) for line in server.access_log.read_text().splitlines() if line.strip()]
            found = [line for line in lines if line["request_id"] == request_id]
            if found:
                return found
        time.sleep(0.2)
    return []


def test_http_request_id_echoed_and_logged(server: RunningServer, http: httpx.Client) -> None:
    photo = (require(IMAGENET_SAMPLES) / "n03249569_drum.JPEG").read_bytes()
    response = http.post("/v1/classify", content=photo, headers={"X-Request-Id": "http-trace-1"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "http-trace-1"
    stages = response.json()["results"][0]["stage_ms"]
    assert set(stages) == {"decode", "queue", "model"} and all(v >= 0 for v in stages.values())
    (line,) = _lines_with(server, "http-trace-1")
    assert line["protocol"] == "http" and line["endpoint"] == "/v1/classify" and line["status"] == "200"
    assert line["model"] == "mobilenet_v2_imagenet" and line["latency_ms"] > 0
    assert set(line["stage_ms"]) == {"decode", "queue", "model"}
    bad = http.post("/v1/classify", content=b"nope", headers={"X-Request-Id": "http-trace-2"})
    assert bad.headers["x-request-id"] == "http-trace-2"
    assert _lines_with(server, "http-trace-2")[0]["status"] == "415"


def test_grpc_request_id_echoed_and_logged(server: RunningServer) -> None:
    photo = (require(IMAGENET_SAMPLES) / "n03249569_drum.JPEG").read_bytes()
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.ImageServiceStub(channel)
        response, call = stub.Classify.with_call(
            pb.ClassifyRequest(images=[photo], top_k=1), metadata=[("request_id", "grpc-trace-1")], timeout=60
        )
    assert dict(call.trailing_metadata()).get("request_id") == "grpc-trace-1"
    assert set(response.results[0].stage_ms) == {"decode", "queue", "model"}
    (line,) = _lines_with(server, "grpc-trace-1")
    assert line["protocol"] == "grpc" and line["endpoint"] == "Classify" and line["status"] == "OK"
