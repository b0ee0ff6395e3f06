"""Every error status of the HTTP edge, with real bad input; the server keeps serving afterwards."""

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import MAX_QUEUED, TEST_ENV
from tests.paths import EXIF_SAMPLES, IMAGENET_SAMPLES, require

pytestmark = pytest.mark.integration

GOOD = "n04335435_streetcar.JPEG"


def _good() -> bytes:
    return (require(IMAGENET_SAMPLES) / GOOD).read_bytes()


def _error(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["kind"] == kind and body["error"]


def _still_serving(http: httpx.Client) -> None:
    response = http.post("/v1/classify", content=_good(), params={"top_k": 1})
    assert response.status_code == 200
    assert response.json()["results"][0]["predictions"][0]["label"].startswith("streetcar")


def test_truncated_jpeg_is_400(http: httpx.Client) -> None:
    data = _good()
    _error(http.post("/v1/classify", content=data[: len(data) * 2 // 5]), 400, "invalid_image")
    _still_serving(http)


def test_empty_body_is_400(http: httpx.Client) -> None:
    _error(http.post("/v1/classify", content=b""), 400, "invalid_image")


def test_not_an_image_is_415(http: httpx.Client) -> None:
    _error(http.post("/v1/classify", content=b"%PDF-1.4 this is not an image" * 10), 415, "unsupported_format")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, format="PPM")  # a real image, but not an accepted format
    _error(http.post("/v1/classify", content=buffer.getvalue()), 415, "unsupported_format")


def test_decompression_bomb_is_413(http: httpx.Client) -> None:
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG", optimize=True)
    assert len(buffer.getvalue()) < 200_000
    _error(http.post("/v1/classify", content=buffer.getvalue()), 413, "too_large")
    _still_serving(http)


def test_oversized_image_and_request_are_413(http: httpx.Client) -> None:
    image_limit = int(TEST_ENV["IMGSERVE_MAX_IMAGE_BYTES"])
    request_limit = int(TEST_ENV["IMGSERVE_MAX_REQUEST_BYTES"])
    padded = _good() + b"\0" * image_limit  # a valid JPEG with trailing junk, over the per-image limit
    _error(http.post("/v1/classify", content=padded), 413, "too_large")
    _error(http.post("/v1/classify", content=b"\xff\xd8" + b"\0" * request_limit), 413, "too_large")
    _still_serving(http)


def test_unknown_model_is_404_and_unavailable_model_503(http: httpx.Client) -> None:
    _error(http.post("/v1/classify", content=_good(), params={"model": "no_such_model"}), 404, "unknown_model")
    _error(http.post("/v2/models/no_such_model/infer", json={"inputs": []}), 404, "unknown_model")
    states = {m["name"]: m["state"] for m in http.get("/v1/models").json()["models"]}
    if states.get("resnet50") == "UNAVAILABLE":
        _error(http.post("/v1/classify", content=_good(), params={"model": "resnet50"}), 503, "model_unavailable")


def test_bad_tensor_is_400(http: httpx.Client) -> None:
    wrong_shape = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [0.0] * 12}]}
    _error(http.post("/v2/models/mobilenet_v2_imagenet/infer", json=wrong_shape), 400, "invalid_tensor")
    wrong_count = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": [0.0] * 5}]}
    _error(http.post("/v2/models/mobilenet_v2_imagenet/infer", json=wrong_count), 400, "invalid_tensor")
    _error(http.post("/v2/models/mobilenet_v2_imagenet/infer", content=b"{not json"), 400, "bad_request")
    _error(http.post("/v1/classify", content=_good(), params={"top_k": "many"}), 400, "bad_request")


def test_exif_samples_invalid_files_never_5xx(http: httpx.Client) -> None:
    folder = require(EXIF_SAMPLES / "jpg")
    files = (
        sorted((folder / "invalid").glob("*.jpg")) + [folder / "corrupted.jpg"] + sorted((folder / "tests").glob("*"))
    )
    for path in files:
        response = http.post("/v1/classify", content=path.read_bytes(), params={"top_k": 1})
        assert response.status_code in (200, 400, 413, 415), f"{path.name}: {response.status_code} {response.text}"
    _still_serving(http)


def test_overload_gives_503_and_recovers(http: httpx.Client) -> None:
    data = _good()

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=120, limits=limits) as client:
            return await asyncio.gather(*(client.post("/v1/classify", content=data) for _ in range(300)))

    responses = asyncio.run(burst())
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}
    assert 503 in statuses, f"bounded queues (max_queued_images={MAX_QUEUED}) should shed a 300-request burst"
    assert 200 in statuses
    for rejected in (r for r in responses if r.status_code == 503):
        _error(rejected, 503, "overloaded")
    _still_serving(http)


def test_errors_are_counted(http: httpx.Client) -> None:
    def errors() -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in http.get("/metrics").text.splitlines()
            if line.startswith("imgserve_errors_total{") and 'kind="unsupported_format"' in line
        )

    before = errors()
    http.post("/v1/classify", content=np.arange(64, dtype=np.uint8).tobytes())
    assert errors() == before + 1
