"""The SDK's `enhance` over HTTP asks for the image itself and reads its report from the `X-Imgserve-*` headers, as
`convert` does: it asked for `report=json` (the image as base64) because the headers lacked the quality levels, the
scores to two decimals (the score headers round to one) and the reverted auto steps. `X-Imgserve-Quality` and
`X-Imgserve-Reverted` now carry them, and the result must be what the JSON answer gave, byte for byte and type for
type. In process: the HTTP app over the tiny models (serving.http.app, not serving.app), the SDK's transport on a
TestClient (tests/unit/test_sdk_convert_headers.py)."""

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.client.errors import ImgServeError
from serving.client.http_transport import HttpTransport, enhancement_report_from_headers
from serving.client.inputs import NamedImage
from serving.http.app import create_http_app
from serving.http.operation_routes import RESULT_HEADERS
from serving.image_ops import EnhanceOutcome, ImageOperations
from tests.unit.test_sdk_convert_headers import from_json_answer, sdk, typed
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit

ENHANCEMENTS = {
    "auto": {"format": "png"},
    "auto-resized": {"auto": "true", "format": "jpeg", "quality": "90", "max_side": "200"},
    "manual": {"brightness": "1.4", "ops": "clahe", "format": "webp"},
}
REVERTED = [{"operation": "exposure_up", "reason": "tag low_light", "stops": 0.512}]


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    service, settings = tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))
    with TestClient(create_http_app(service, None, settings)) as client:
        yield client


@pytest.fixture
def sent(http: TestClient) -> Iterator[list[httpx.Request]]:
    requests: list[httpx.Request] = []
    http.event_hooks["request"] = [requests.append]
    yield requests
    http.event_hooks["request"] = []


def noisy() -> bytes:
    """A noisy gradient: the quality stage (the tiny models') tags it `noisy`, so auto mode has a fix to apply."""
    y, x = np.mgrid[0:240, 0:320]
    gradient = np.stack([x / 320 * 255, y / 240 * 255, (x + y) / 560 * 255], -1)
    rgb = np.clip(gradient + np.random.default_rng(3).normal(0, 40, gradient.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("name", ENHANCEMENTS)
def test_enhance_reads_the_image_answer_and_gives_the_json_result(
    http: TestClient, sent: list[httpx.Request], name: str
) -> None:
    options = ENHANCEMENTS[name]
    expected = from_json_answer(http, "enhance", noisy(), options)
    sent.clear()
    result = sdk(http).operate("enhance", NamedImage("noisy.png", noisy()), options)
    assert [r.url.params.get("report") for r in sent] == ["image"]  # was "json": the image in base64
    assert result.data == expected.data and result.content_type == expected.content_type
    assert typed(result.report) == typed(expected.report)
    assert result.report["quality_before"]["level"] and result.report["quality_after"]["level"]
    if name == "auto":
        assert [s["reason"] for s in result.report["operations"]] == ["tag noisy"]


def test_reverted_steps_come_from_the_headers(http: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny models' scores decide whether a real revert happens: this one is forced, so that the header's path
    is taken (the report has `reverted` only when steps were undone)."""
    enhance = ImageOperations.enhance

    async def reverting(self: ImageOperations, *args: Any) -> EnhanceOutcome:
        return replace(await enhance(self, *args), reverted=REVERTED)

    monkeypatch.setattr(ImageOperations, "enhance", reverting)
    options = {"format": "png"}
    expected = from_json_answer(http, "enhance", noisy(), options)
    result = sdk(http).operate("enhance", NamedImage("noisy.png", noisy()), options)
    assert expected.report["reverted"] == REVERTED and typed(result.report) == typed(expected.report)
    answer = http.post("/v1/enhance", params=options, content=noisy())
    assert (
        answer.headers["x-imgserve-reverted"] == '[{"operation":"exposure_up","reason":"tag low_light","stops":0.512}]'
    )


def test_the_scores_keep_their_precision_and_the_one_decimal_headers_stay(http: TestClient) -> None:
    answer = http.post("/v1/enhance", params={"format": "png"}, content=noisy())
    report = enhancement_report_from_headers(answer.headers)
    for name in ("before", "after"):
        verdict = report[f"quality_{name}"]
        assert answer.headers[f"x-imgserve-score-{name}"] == f"{verdict['score']:.1f}"  # as before
        assert answer.headers[f"x-imgserve-level-{name}"] == verdict["level"]
    assert answer.headers["x-imgserve-reverted"] == "[]" and "reverted" not in report


def test_the_new_headers_are_exposed_to_cross_origin_pages() -> None:
    for name in ("quality", "reverted", "level-before", "level-after"):
        assert f"x-imgserve-{name}" in RESULT_HEADERS


def test_an_older_servers_headers_still_give_a_report() -> None:
    """Without `X-Imgserve-Quality`/`-Reverted` (a server before them): the verdicts from the score and tags
    headers, to their one decimal, and no reverted steps."""
    headers = httpx.Headers(
        {
            "content-type": "image/png",
            "x-imgserve-format": "png",
            "x-imgserve-size": "4x3",
            "x-imgserve-input-bytes": "100",
            "x-imgserve-output-bytes": "80",
            "x-imgserve-compression-ratio": "1.2500",
            "x-imgserve-operations-detail": '[{"operation":"brightness","reason":"requested","factor":1.4}]',
            "x-imgserve-score-before": "31.8",
            "x-imgserve-tags-before": "low_light,noisy",
            "x-imgserve-score-after": "58.2",
            "x-imgserve-tags-after": "none",
        }
    )
    report = enhancement_report_from_headers(headers)
    assert report["operations"] == [{"operation": "brightness", "reason": "requested", "factor": 1.4}]
    assert report["quality_before"] == {"score": 31.8, "tags": ["low_light", "noisy"]}
    assert report["quality_after"] == {"score": 58.2, "tags": []} and "reverted" not in report


def test_an_enhancement_answer_without_its_headers_is_a_bad_response() -> None:
    def bare(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"\x89PNG", headers={"content-type": "image/png"})

    transport = HttpTransport("http://testserver", retries=0, transport=httpx.MockTransport(bare))
    with pytest.raises(ImgServeError) as raised:
        transport.operate("enhance", NamedImage("a.png", b"x"), {})
    assert raised.value.kind == "bad_response"
