"""The SDK's `convert` over HTTP asks for the image itself and reads its report from the `X-Imgserve-*` headers: it
asked for `report=json`, the image as base64 in JSON (a third more bytes, and a JSON parse of a multi-megabyte
string). The result must be what the JSON answer gave, byte for byte and type for type. `enhance` does the same
since `X-Imgserve-Quality` and `-Reverted` carry what only its JSON report had (quality levels, two-decimal scores,
reverted auto steps: tests/unit/test_sdk_enhance_headers.py). In process: the HTTP app over the tiny models
(serving.http.app, not serving.app), the SDK's transport on a TestClient."""

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.client.errors import ImgServeError
from serving.client.http_transport import HttpTransport, conversion_report_from_headers
from serving.client.inputs import NamedImage
from serving.client.types import OperationResult
from serving.http.app import create_http_app
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit

CONVERSIONS = [
    {"format": "png"},
    {"format": "webp", "quality": "80", "max_side": "100"},
    {"format": "jpeg", "width": "64", "metadata": "strip"},
    {},  # the input's format
]


def photo() -> bytes:
    rng = np.random.default_rng(11)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def animation() -> bytes:
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "green", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50)
    return out.getvalue()


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    service, settings = tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))
    with TestClient(create_http_app(service, None, settings)) as client:
        yield client


@pytest.fixture
def sent(http: TestClient) -> Iterator[list[httpx.Request]]:
    """The requests the SDK sends through `http`."""
    requests: list[httpx.Request] = []
    http.event_hooks["request"] = [requests.append]
    yield requests
    http.event_hooks["request"] = []


def sdk(http: TestClient) -> HttpTransport:
    """The SDK's HTTP transport, its httpx client the in-process app's."""
    transport = HttpTransport("http://testserver", retries=0)
    transport._http.close()
    transport._http = http
    return transport


def from_json_answer(http: TestClient, operation: str, data: bytes, options: dict[str, str]) -> OperationResult:
    """What the SDK returned before: the `report=json` answer, its image decoded from base64."""
    answer = http.post(f"/v1/{operation}", params={**options, "report": "json"}, content=data)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    image = base64.b64decode(report.pop("image_base64"))
    return OperationResult(image, report["content_type"], report)


def typed(report: dict[str, Any]) -> str:
    """Keys in order, and 1 apart from 1.0."""
    return json.dumps(report)


@pytest.mark.parametrize("options", CONVERSIONS, ids=[o.get("format", "same") for o in CONVERSIONS])
def test_convert_reads_the_image_answer_and_gives_the_json_result(
    http: TestClient, sent: list[httpx.Request], options: dict[str, str]
) -> None:
    data = photo()
    expected = from_json_answer(http, "convert", data, options)
    sent.clear()
    result = sdk(http).operate("convert", NamedImage("photo.jpg", data), options)
    assert [r.url.params.get("report") for r in sent] == ["image"]  # was "json": the image in base64
    assert result.data == expected.data and result.content_type == expected.content_type
    assert typed(result.report) == typed(expected.report)


def test_an_animations_frames_come_from_the_headers(http: TestClient) -> None:
    data = animation()
    expected = from_json_answer(http, "convert", data, {"format": "gif"})
    result = sdk(http).operate("convert", NamedImage("a.gif", data), {"format": "gif"})
    assert expected.report["frames"] == 3 and typed(result.report) == typed(expected.report)


def test_enhance_reads_the_image_answer_too(http: TestClient, sent: list[httpx.Request]) -> None:
    options = {"brightness": "1.4", "format": "png"}
    data = photo()
    expected = from_json_answer(http, "enhance", data, options)
    sent.clear()
    result = sdk(http).operate("enhance", NamedImage("photo.jpg", data), options)
    assert [r.url.params.get("report") for r in sent] == ["image"]  # was "json": the headers lacked facts
    assert result.data == expected.data and typed(result.report) == typed(expected.report)
    assert result.report["quality_before"]["level"]  # a fact only the JSON report carried


def test_every_fact_of_a_conversion_report_has_a_header(http: TestClient) -> None:
    answer = http.post("/v1/convert", params={"format": "webp"}, content=photo())
    report = conversion_report_from_headers(answer.headers)
    expected = from_json_answer(http, "convert", photo(), {"format": "webp"}).report
    assert list(report) == list(expected)


def test_an_answer_without_the_headers_is_a_bad_response() -> None:
    def bare(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"\x89PNG", headers={"content-type": "image/png"})

    transport = HttpTransport("http://testserver", retries=0, transport=httpx.MockTransport(bare))
    with pytest.raises(ImgServeError) as raised:
        transport.operate("convert", NamedImage("a.png", b"x"), {})
    assert raised.value.kind == "bad_response"
