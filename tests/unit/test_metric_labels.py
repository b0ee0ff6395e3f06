"""Metric label values: a request to a served model is counted under that model's name, an unknown name as
`unknown` (README, Metrics). The OIP image-level model `classify` (HTTP `/v2/models/classify/infer`, gRPC
ModelInfer) was counted as `unknown` although it answered; the decode stage was labelled with every planned model
joined by commas (`mobilenet_v2_imagenet,quality_mos`), a value that is no model's name."""

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import REGISTRY

from serving.config.app_args import AppArgs
from serving.grpc.edge import attempt
from serving.http.app import create_http_app
from serving.oip.tensors import serialize_bytes_tensor
from serving.placement import build_service, compose
from serving.service import IMAGE_MODEL_NAME
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit
INFER = "/v2/models/{model}/infer"


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = tiny_settings(Path(tmp_path_factory.mktemp("tiny")))
    service = build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))
    with TestClient(create_http_app(service, settings=settings), base_url="http://127.0.0.1:8000") as client:
        yield client


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def image_infer(http: TestClient, model: str) -> Any:
    tensor = serialize_bytes_tensor(np.array([jpeg()], dtype=np.object_))
    inputs = [{"name": "IMAGE", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(tensor)}}]
    head = json.dumps({"inputs": inputs}).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "content-type": "application/octet-stream"}
    return http.post(f"/v2/models/{model}/infer", content=head + tensor, headers=headers)


def test_oip_requests_are_counted_under_the_model_in_the_path(http: TestClient) -> None:
    def count(model: str, status: str) -> float:
        return sample("imgserve_requests_total", endpoint=INFER, protocol="http", model=model, status=status)

    before = {(m, s): count(m, s) for m, s in (("classify", "200"), ("unknown", "200"), ("unknown", "404"))}
    assert image_infer(http, "classify").status_code == 200
    assert image_infer(http, "no_such_model").status_code == 404
    assert count("classify", "200") == before[("classify", "200")] + 1
    assert count("unknown", "200") == before[("unknown", "200")]  # a served model's answer is never "unknown"
    assert count("unknown", "404") == before[("unknown", "404")] + 1  # a name the client made up still is


def test_grpc_model_infer_of_the_image_level_model_is_counted_under_its_name() -> None:
    def count(model: str) -> float:
        return sample("imgserve_requests_total", endpoint="ModelInfer", protocol="grpc", model=model, status="OK")

    before = count(IMAGE_MODEL_NAME)

    async def answer() -> str:
        return "answered"

    result, error = asyncio.run(attempt("ModelInfer", IMAGE_MODEL_NAME, answer))
    assert (result, error) == ("answered", None) and count(IMAGE_MODEL_NAME) == before + 1


def test_the_decode_stage_is_labelled_with_the_request_s_primary_model(http: TestClient) -> None:
    def decodes(model: str) -> float:
        return sample("imgserve_stage_latency_seconds_count", stage="decode", model=model)

    before = decodes("tiny")
    response = http.post("/v1/analyze?fields=classification,quality", content=jpeg())
    assert response.status_code == 200, response.text
    assert decodes("tiny") == before + 1
    assert decodes("tiny,quality_mos") == 0.0 and decodes("quality_mos,tiny") == 0.0


def test_the_decode_label_rule() -> None:
    from serving.metrics import decode_model_label

    assert decode_model_label(("mobilenet_v2_imagenet", "quality_mos")) == "mobilenet_v2_imagenet"
    assert decode_model_label(("quality_mos",)) == "quality_mos"  # a quality-only analysis
    assert decode_model_label(("parcels@7", "quality_mos")) == "parcels"  # a canary version: its model's name
    assert decode_model_label(()) == ""  # only the quality stage's working image


def test_the_metrics_know_the_image_level_model_by_the_service_s_name() -> None:
    from serving.metrics import IMAGE_LEVEL_MODEL, KNOWN_MODELS, model_label

    assert IMAGE_LEVEL_MODEL == IMAGE_MODEL_NAME and IMAGE_MODEL_NAME in KNOWN_MODELS
    assert model_label(IMAGE_MODEL_NAME) == IMAGE_MODEL_NAME and model_label("made_up_by_a_client") == "unknown"
