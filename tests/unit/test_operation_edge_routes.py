"""`/v1/convert` and `/v1/enhance` answers for the edge inputs of the image-operations review: a 1x1 grey image (was a
500), `icc=keep` to BMP/GIF (was a 200 with shifted colours), AVIF of 16.8 MP (was ~20 s of CPU), a truncated TIFF
(was a 200 with a black bottom). Same app and tiny local service as tests/unit/test_operation_routes.py."""

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.unit.test_operation_routes import http, service  # noqa: F401 - the fixtures

pytestmark = pytest.mark.unit


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def test_a_one_pixel_grey_image_converts_and_enhances(http: TestClient) -> None:  # noqa: F811
    data = encoded(Image.new("L", (1, 1), 77), "PNG")
    converted = http.post("/v1/convert", params={"format": "bmp"}, content=data)
    assert converted.status_code == 200, converted.text
    assert Image.open(io.BytesIO(converted.content)).size == (1, 1)
    enhanced = http.post("/v1/enhance", params={"ops": "gamma"}, content=data)
    assert enhanced.status_code == 200, enhanced.text


def test_operation_refusals_are_4xx_with_their_kind(http: TestClient) -> None:  # noqa: F811
    photo = encoded(Image.new("RGB", (32, 24), (200, 100, 50)), "JPEG")
    keep = http.post("/v1/convert", params={"format": "gif", "icc": "keep"}, content=photo)
    assert keep.status_code == 400 and "icc=keep" in keep.text
    big = encoded(Image.new("RGB", (4100, 4100), (40, 90, 160)), "PNG")
    slow = http.post("/v1/convert", params={"format": "avif"}, content=big)
    assert slow.status_code == 413 and slow.json()["kind"] == "too_large" and "16000000" in slow.text
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8))
    tiff = encoded(noise, "TIFF")
    cut = http.post("/v1/convert", params={"format": "png"}, content=tiff[: len(tiff) * 6 // 10])
    assert cut.status_code == 400 and cut.json()["kind"] == "invalid_image" and "Read error" in cut.text
