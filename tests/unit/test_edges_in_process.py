"""The HTTP routes and gRPC methods over the local placement with tiny generated models: no Ray cluster.

The same `InferenceService`, stages and FastAPI app the server runs, built by the same composition root
(`serving.placement.compose`), driven by FastAPI's TestClient and by a real gRPC client on a local port.
"""

import asyncio
import base64
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pipelines.decode import decode_image
from pipelines.quality import LearnedQuality, compute_metrics, quality_verdict
from serving import access_log
from serving.config.app_args import AppArgs
from serving.grpc.image_methods import ImageGrpcMethods
from serving.http.app import create_http_app
from serving.oip.tensors import serialize_bytes_tensor
from serving.placement import IngressConfig, build_service, compose
from serving.service import InferenceService
from tests.unit.grpc_local import image_service_stub
from tests.unit.tiny_models import CLASSES, tiny_settings

pytestmark = pytest.mark.unit


def jpeg(color: tuple[int, int, int] = (200, 60, 30), size: tuple[int, int] = (96, 64)) -> bytes:
    image = Image.new("RGB", size, color)
    for x in range(0, size[0], 8):  # some texture, so the quality metrics have something to measure
        image.paste((color[2], color[0], color[1]), (x, 0, x + 4, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> IngressConfig:
    return compose(AppArgs(placement="local", default_model="tiny"), tiny_settings(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def service(config: IngressConfig) -> InferenceService:
    return build_service(config)


@pytest.fixture(scope="module")
def http(service: InferenceService) -> Iterator[TestClient]:
    with TestClient(create_http_app(service)) as client:
        yield client


def test_classify_raw_body(http: TestClient) -> None:
    response = http.post("/v1/classify", content=jpeg())
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["model"] == "tiny" and len(result["predictions"]) == 5
    scores = [p["score"] for p in result["predictions"]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1.0) < 1e-5
    assert {p["label"] for p in result["predictions"]} == set(CLASSES)
    assert set(result["stage_ms"]) == {"decode", "queue", "model"}


def test_request_id_is_echoed_or_made(http: TestClient) -> None:
    assert http.post("/v1/classify", content=jpeg(), headers={"X-Request-Id": "t-1"}).headers["x-request-id"] == "t-1"
    made = http.post("/v1/classify", content=b"junk").headers["x-request-id"]
    assert len(made) == 32 and made != http.get("/v2/health/live").headers["x-request-id"]


def test_confidence_threshold_and_top_k(http: TestClient) -> None:
    everything = http.post("/v1/classify", content=jpeg()).json()["results"][0]["predictions"]
    cut = (everything[1]["score"] + everything[2]["score"]) / 2
    kept = http.post("/v1/classify", params={"confidence_threshold": cut}, content=jpeg()).json()
    assert kept["results"][0]["predictions"] == everything[:2]
    top1 = http.post("/v1/classify", params={"top_k": 1}, content=jpeg()).json()["results"][0]["predictions"]
    assert top1 == everything[:1]
    for bad in ({"top_k": 0}, {"confidence_threshold": 1.5}, {"top_k": "x"}):
        response = http.post("/v1/classify", params=bad, content=jpeg())
        assert response.status_code == 400 and response.json()["kind"] == "bad_request", (bad, response.text)


def test_json_base64_forms(http: TestClient) -> None:
    raw = http.post("/v1/classify", content=jpeg()).json()["results"][0]["predictions"]
    one = base64.b64encode(jpeg()).decode()
    single = http.post("/v1/classify", json={"image": one, "options": {"top_k": 3}})
    assert single.status_code == 200, single.text
    assert single.json()["results"][0]["predictions"] == raw[:3]
    cut = raw[0]["score"] - 1e-6
    many = http.post("/v1/classify", json={"images": [one, one], "options": {"confidence_threshold": cut}})
    assert [r["predictions"] for r in many.json()["results"]] == [raw[:1], raw[:1]]
    body_wins = http.post("/v1/classify", params={"top_k": 1}, json={"image": one, "options": {"top_k": 2}})
    assert len(body_wins.json()["results"][0]["predictions"]) == 2
    analyzed = http.post("/v1/analyze", json={"image": one, "options": {"fields": ["classification"], "top_k": 1}})
    assert set(analyzed.json()["results"][0]) == {"classification"}
    for body in ({"image": "not base64!"}, {"image": one, "images": [one]}, {}, {"image": one, "options": {"x": 1}}):
        response = http.post("/v1/classify", json=body)
        assert response.status_code == 400 and response.json()["kind"] == "bad_request", (body, response.text)


def test_analyze_answers_what_the_verdict_function_says(http: TestClient, config: IngressConfig) -> None:
    """The served quality is `quality_verdict` of the metrics of the same decode, with the learned view."""
    data = jpeg((40, 90, 160), (300, 200))
    response = http.post("/v1/analyze", content=data)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert set(result) == {"classification", "quality", "anomaly", "metadata"}
    settings = config.stages
    specs = {name: entry.config.preprocess_spec() for name, entry in settings.models.items()}
    assert settings.thresholds is not None
    decoded = decode_image(data, specs, settings.limits, settings.thresholds.working_max_side)
    metrics = compute_metrics(decoded.working, (decoded.width, decoded.height), decoded.native_rgb)
    learned = LearnedQuality(**result["anomaly"])  # the model's answer as served (the model is tested elsewhere)
    expected = quality_verdict(metrics, settings.thresholds, learned).to_dict()
    assert result["quality"] == expected
    assert result["metadata"]["image"]["width"] == 300


def test_bad_input_is_a_clear_4xx(http: TestClient) -> None:
    cases = [
        ("/v1/classify", {}, b"not an image", 415, "unsupported_format"),
        ("/v1/classify", {}, jpeg()[:40], 400, "invalid_image"),
        ("/v1/classify", {"model": "nope"}, jpeg(), 404, "unknown_model"),
        ("/v1/classify", {"model": "quality_mos"}, jpeg(), 400, "bad_request"),
        ("/v1/analyze", {"fields": "colour"}, jpeg(), 400, "bad_request"),
        ("/v1/classify", {}, b"", 400, "invalid_image"),
    ]
    for path, params, body, status, kind in cases:
        response = http.post(path, params=params, content=body)
        assert response.status_code == status, (path, params, response.text)
        assert response.json()["kind"] == kind, response.text
    assert http.post("/v1/classify", content=jpeg()).status_code == 200  # still serving


def test_multipart_reports_the_bad_image_index(http: TestClient) -> None:
    files = [("image", ("a.jpg", jpeg())), ("image", ("b.jpg", b"\xff\xd8broken"))]
    response = http.post("/v1/classify", files=files)
    assert response.status_code == 400 and "image index 1" in response.json()["error"]


def test_metadata_models_and_probes(http: TestClient) -> None:
    meta = http.post("/v1/metadata", content=jpeg()).json()["results"][0]
    assert meta["file"]["format"] == "JPEG"
    models = http.get("/v1/models").json()
    assert models["default_model"] == "tiny"
    assert {m["name"]: m["state"] for m in models["models"]} == {"tiny": "READY", "quality_mos": "READY"}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2/health/live").status_code == 200


def image_infer(http: TestClient, path: str) -> Any:
    """One JPEG to the image-level model, as tritonclient sends it (the binary tensor extension)."""
    tensor = serialize_bytes_tensor(np.array([jpeg()], dtype=np.object_))
    head = json.dumps(
        {
            "inputs": [
                {"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(tensor)}}
            ]
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"}
    return http.post(path, content=head + tensor, headers=headers)


def test_oip_tensor_and_bytes_models(http: TestClient) -> None:
    tensor = np.full((2, 3, 32, 32), 0.5, dtype=np.float32)
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(tensor.shape), "data": tensor.ravel().tolist()}]
    }
    response = http.post("/v2/models/tiny/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "logits" and output["shape"] == [2, 5]
    wrong = {"inputs": [{**body["inputs"][0], "shape": [1, 3, 8, 8], "data": [0.0] * 192}]}
    assert http.post("/v2/models/tiny/infer", json=wrong).status_code == 400
    metadata = http.get("/v2/models/classify").json()
    assert metadata["inputs"][0]["datatype"] == "BYTES" and metadata["parameters"]["classifier"] == "tiny"
    assert http.get("/v2/models/tiny/ready").json()["ready"] is True
    config = http.get("/v2/models/classify/config").json()
    assert config["input"][0]["data_type"] == "TYPE_STRING"  # Triton's name for BYTES in a model configuration
    assert http.get("/v2/models/classify/versions/1").status_code == 200
    for path in ("", "/ready", "/config"):  # the image-level model has one version, as its metadata says
        assert http.get(f"/v2/models/classify/versions/99{path}").status_code == 404, path
    unknown = image_infer(http, "/v2/models/classify/versions/99/infer")
    assert unknown.status_code == 404 and unknown.json()["kind"] == "unknown_model"
    assert image_infer(http, "/v2/models/classify/versions/1/infer").status_code == 200


def test_oip_classification_extension_writes_the_outputs_own_values_and_labels(http: TestClient) -> None:
    """`<value>:<index>:<label>` with the output's own value (Triton's; it wrote a softmax of the logits) and the
    model's labels only on classification outputs (quality_mos's `score` got the first tag, "blurry")."""
    tensor = np.full((1, 3, 32, 32), 0.5, dtype=np.float32)
    inputs = [{"name": "input", "datatype": "FP32", "shape": list(tensor.shape), "data": tensor.ravel().tolist()}]
    logits = http.post("/v2/models/tiny/infer", json={"inputs": inputs}).json()["outputs"][0]["data"]
    body = {"inputs": inputs, "outputs": [{"name": "logits", "parameters": {"classification": 2}}]}
    (top,) = http.post("/v2/models/tiny/infer", json=body).json()["outputs"]
    assert top["datatype"] == "BYTES" and top["shape"] == [1, 2]
    best = int(np.argmax(logits))
    value, index, label = top["data"][0].split(":")
    assert (int(index), label) == (best, CLASSES[best]) and float(value) == pytest.approx(logits[best], abs=1e-5)
    meta = http.get("/v2/models/quality_mos").json()["inputs"][0]
    shape = [1, *meta["shape"][1:]]
    quality_input = {**meta, "shape": shape, "data": [0.5] * int(np.prod(shape))}
    body = {"inputs": [quality_input], "outputs": [{"name": "score", "parameters": {"classification": 1}}]}
    (score,) = http.post("/v2/models/quality_mos/infer", json=body).json()["outputs"]
    assert score["data"][0].count(":") == 1 and score["data"][0].endswith(":0")


async def _with_call(method: Any, request: Any, request_id: str) -> tuple[Any, Any]:
    call = method(request, metadata=(("request_id", request_id),))
    return await call, call


class GrpcIngress(ImageGrpcMethods):
    """The Ingress's ImageService methods. (The OIP servicer is tested against real servers with tritonclient: its
    generated `inference` messages and tritonclient's share proto names and cannot load in one process.)"""

    def __init__(self, service: InferenceService):
        self.service = service


def test_grpc_methods_on_a_real_channel(service: InferenceService) -> None:
    from serving.grpc.generated import image_service_pb2

    async def scenario() -> None:
        async with image_service_stub(GrpcIngress(service)) as stub:
            reply, call = await _with_call(
                stub.Classify, image_service_pb2.ClassifyRequest(images=[jpeg()], top_k=3), "g-1"
            )
            assert ("request_id", "g-1") in tuple(await call.trailing_metadata())
            predictions = reply.results[0].predictions
            assert len(predictions) == 3 and reply.results[0].model == "tiny"
            cut = predictions[0].score - 1e-6
            reply = await stub.Classify(image_service_pb2.ClassifyRequest(images=[jpeg()], confidence_threshold=cut))
            assert len(reply.results[0].predictions) == 1
            analysis = await stub.Analyze(image_service_pb2.AnalyzeRequest(images=[jpeg()], fields=["quality"]))
            assert analysis.results[0].quality["level"] in ("LOW", "MEDIUM", "HIGH", "ULTRA")
            assert not analysis.results[0].HasField("classification")
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.Classify(image_service_pb2.ClassifyRequest(images=[b"\xff\xd8broken"]))
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.Classify(image_service_pb2.ClassifyRequest(images=[jpeg()], model="nope"))
            assert error.value.code() == grpc.StatusCode.NOT_FOUND

    asyncio.run(scenario())


def test_a_plan_for_a_stage_the_pipeline_lacks_is_refused_before_any_work(config: IngressConfig) -> None:
    from dataclasses import replace

    from serving.errors import ModelUnavailableError
    from serving.stages.local import build_local_pipeline
    from serving.stages.pipeline import StagePlan

    pipeline = build_local_pipeline(replace(config.stages, metadata=False, quality=False))
    for plan, missing in (
        (StagePlan(metadata=True), "metadata stage"),
        (StagePlan(quality=True), "quality stage"),
        (StagePlan(models=("nope",)), "model 'nope'"),
    ):
        with pytest.raises(ModelUnavailableError, match=missing):
            asyncio.run(pipeline.run(jpeg(), plan))
    outputs = asyncio.run(pipeline.run(jpeg(), StagePlan(models=("tiny",))))
    assert set(outputs.models) == {"tiny"} and outputs.quality is None and outputs.metadata is None


def test_the_access_log_says_where_any_analysis_spent_its_time(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stage_ms was the classifier's only: a quality-only analysis (the cheap call for camera feeds) and /v1/metadata
    logged `"stage_ms": {}`."""
    lines: list[dict] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    logger = logging.getLogger("imgserve.access.test")
    logger.handlers, logger.propagate = [Keep()], False
    logger.setLevel(logging.INFO)
    monkeypatch.setattr(access_log, "_logger", logger)
    monkeypatch.delenv(access_log.ACCESS_LOG_ENV, raising=False)
    for route, params, stages in (
        ("/v1/analyze", {"fields": "quality"}, {"decode", "quality"}),
        ("/v1/metadata", {}, {"metadata"}),
        ("/v1/analyze", {}, {"decode", "queue", "model", "quality", "metadata"}),
    ):
        assert http.post(route, params=params, content=jpeg()).status_code == 200
        assert lines[-1]["endpoint"] == route and stages <= set(lines[-1]["stage_ms"]), lines[-1]
        assert all(ms >= 0 for ms in lines[-1]["stage_ms"].values())
