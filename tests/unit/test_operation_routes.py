"""`/v1/convert`, `/v1/enhance`, `/v1/formats`, `/v1/enhance/options` and the gRPC `Convert`/`Enhance` RPCs over the
local placement with the tiny test models (the same app and service the server builds; no Ray cluster)."""

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pipelines.limits import DecodeLimits
from serving.grpc.image_methods import ImageGrpcMethods
from serving.http.app import create_http_app
from serving.image_ops import ImageOperations
from serving.service import InferenceService
from tests.unit.grpc_local import image_service_stub
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


def photo(size: tuple[int, int] = (320, 240), gain: float = 1.0) -> bytes:
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    rgb = np.stack([x * 255 / size[0], y * 255 / size[1], np.full_like(x, 128.0)], axis=2)
    rgb = np.clip((rgb + rng.normal(0, 6, rgb.shape)) * gain, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=92)
    return out.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


@pytest.fixture(scope="module")
def http(service: InferenceService) -> Iterator[TestClient]:
    with TestClient(create_http_app(service)) as client:
        yield client


def test_convert_answers_the_image_with_its_facts(http: TestClient) -> None:
    data = photo()
    response = http.post("/v1/convert", params={"format": "webp", "quality": 80, "max_side": 160}, content=data)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/webp"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "WEBP" and image.size == (160, 120)
    assert response.headers["x-imgserve-input-bytes"] == str(len(data))
    assert response.headers["x-imgserve-output-bytes"] == str(len(response.content))
    assert float(response.headers["x-imgserve-compression-ratio"]) == pytest.approx(
        len(data) / len(response.content), 1e-3
    )
    assert response.headers["x-imgserve-size"] == "160x120"


def test_convert_json_report_and_multipart(http: TestClient) -> None:
    files = {"image": ("a.jpg", photo(), "image/jpeg")}
    report = http.post("/v1/convert", params={"format": "png", "report": "json"}, files=files).json()
    assert report["format"] == "png" and report["size"] == [320, 240] and report["input_format"] == "jpeg"
    assert Image.open(io.BytesIO(base64.b64decode(report["image_base64"]))).format == "PNG"


def test_json_body_options_override_the_query(http: TestClient) -> None:
    body = {"image": base64.b64encode(photo()).decode(), "options": {"format": "gif"}}
    response = http.post("/v1/convert", params={"format": "png"}, json=body)
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"


@pytest.mark.parametrize(
    "params, message",
    [
        ({"format": "jxl"}, "not supported"),
        ({"format": "jpeg", "quality": 0}, "out of range"),
        ({"format": "png", "lossless": "true", "quality": 50}, "does not apply"),
        ({"format": "jpeg", "report": "xml"}, "report"),
        ({"format": "jpeg", "max_side": "big"}, "max_side"),
        ({"format": "jpeg", "quality": "80.5"}, "quality"),
    ],
)
def test_bad_conversion_options_are_400(http: TestClient, params: dict, message: str) -> None:
    """Every bad option is `invalid_option`, as over gRPC and in a JSON body; a wrongly typed query value
    (`quality=80.5`, which FastAPI refuses before the route runs) was `bad_request`."""
    response = http.post("/v1/convert", params=params, content=photo())
    assert response.status_code == 400, response.text
    assert message in response.json()["error"] and response.json()["kind"] == "invalid_option"


def test_bad_images_are_4xx_json(http: TestClient) -> None:
    assert http.post("/v1/convert", params={"format": "png"}, content=b"\xff\xd8\xff broken").status_code == 400
    assert http.post("/v1/convert", params={"format": "png"}, content=b"plain text").status_code == 415
    truncated = photo()[:2000]
    response = http.post("/v1/convert", params={"format": "png"}, content=truncated)
    assert response.status_code == 400 and response.json()["kind"] == "invalid_image"
    two = {"images": [base64.b64encode(photo()).decode()] * 2}
    assert "exactly one" in http.post("/v1/convert", json=two).json()["error"]


def test_enhance_auto_applies_the_fixes_of_the_tags_it_reports(http: TestClient) -> None:
    """Auto mode over the served quality stage: the operations are exactly the fixes of the reported tags (the
    tiny test models' learned quality is random, so which tags fire is theirs; the effect on real photos is
    tests/unit/test_enhance.py and tooling.enhance.evaluate)."""
    from pipelines.enhance import EnhanceOptions

    dark = photo(size=(800, 600), gain=0.25)
    response = http.post("/v1/enhance", params={"format": "png", "report": "json"}, content=dark)
    assert response.status_code == 200, response.text
    report = response.json()
    expected = [s.name for s in EnhanceOptions(auto=True).steps(report["quality_before"]["tags"])]
    assert [o["operation"] for o in report["operations"]] == expected
    assert report["quality_after"]["score"] != report["quality_before"]["score"] or not expected
    image = http.post("/v1/enhance", params={"format": "png"}, content=dark)
    assert image.headers["x-imgserve-operations"] == (",".join(expected) or "none")
    assert image.headers["x-imgserve-score-before"] == f"{report['quality_before']['score']:.1f}"


def test_enhance_manual_json_report(http: TestClient) -> None:
    params = {"brightness": 1.5, "ops": "clahe", "format": "jpeg", "quality": 90, "report": "json"}
    report = http.post("/v1/enhance", params=params, content=photo()).json()
    assert [o["operation"] for o in report["operations"]] == ["clahe", "brightness"]
    assert report["quality_before"]["score"] >= 0 and report["quality_after"]["level"]
    assert report["format"] == "jpeg" and report["image_base64"]


@pytest.mark.parametrize("params", [{"brightness": 3.1}, {"contrast": 0.0}, {"ops": "magic"}, {"sharpness": "x"}])
def test_bad_enhancement_options_are_400(http: TestClient, params: dict) -> None:
    response = http.post("/v1/enhance", params=params, content=photo())
    assert response.status_code == 400 and response.json()["kind"] == "invalid_option"


def test_a_wrongly_typed_query_elsewhere_stays_bad_request(http: TestClient) -> None:
    response = http.get("/v1/formats", params={"x": "1"})
    assert response.status_code == 400 and response.json()["kind"] == "bad_request"


def test_formats_and_enhance_options(http: TestClient) -> None:
    listed = {f["format"]: f for f in http.get("/v1/formats").json()["output"]}
    assert {"jpeg", "png", "webp", "tiff", "bmp", "gif", "avif", "heif"} <= set(listed)
    assert listed["webp"]["animation"] and not listed["jpeg"]["alpha"]
    assert all(f["available"] or f["reason"] for f in listed.values())
    options = http.get("/v1/enhance/options").json()
    assert options["auto"]["fixes"]["low_light"] == "exposure_up"


class GrpcIngress(ImageGrpcMethods):
    def __init__(self, service: InferenceService):
        self.service = service
        self.image_operations = ImageOperations(service, DecodeLimits())


def test_grpc_convert_and_enhance(service: InferenceService) -> None:
    from serving.grpc.generated import image_service_pb2 as pb

    async def scenario() -> None:
        async with image_service_stub(GrpcIngress(service)) as stub:
            reply = await stub.Convert(pb.ImageOperationRequest(image=photo(), options={"format": "avif"}))
            assert reply.content_type == "image/avif" and reply.report["format"] == "avif"
            assert Image.open(io.BytesIO(reply.image)).size == (320, 240)
            options = {"format": "png", "brightness": "2.0"}
            reply = await stub.Enhance(pb.ImageOperationRequest(image=photo(gain=0.25), options=options))
            assert [o["operation"] for o in reply.report["operations"]] == ["brightness"]
            assert "score" in reply.report["quality_after"]
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await stub.Convert(pb.ImageOperationRequest(image=photo(), options={"quality": "500"}))
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "out of range" in error.value.details()

    asyncio.run(scenario())


def test_a_cross_origin_page_can_read_the_result_headers(service: InferenceService) -> None:
    """With CORS on, a browser shows a page of another origin only the safelisted response headers and those in
    Access-Control-Expose-Headers: the sizes, ratio and scores were not among them."""
    from serving.security.gate import SecurityGate
    from serving.security.settings import SecuritySettings

    origin = "https://app.example"
    gate = SecurityGate("off", None, SecuritySettings(auth="off", cors_origins=[origin]))
    with TestClient(create_http_app(service, gate=gate)) as client:
        answer = client.post("/v1/enhance", params={"brightness": "1.2"}, content=photo(), headers={"Origin": origin})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
    exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
    sent = {h.lower() for h in answer.headers if h.lower().startswith("x-imgserve-")}
    assert sent and sent <= exposed, sent - exposed
    assert {"x-request-id", "content-disposition"} <= exposed


def test_an_enhanced_output_larger_than_an_input_may_be_is_answered_without_a_score_after(tmp_path: Path) -> None:
    """A BMP of the photo is over the (lowered) input limit: the score after used to re-read it under that limit and
    the request was a 413, while /v1/convert of the same request answered 200."""
    from pipelines.convert import ConvertOptions
    from pipelines.enhance import EnhanceOptions
    from serving.config.app_args import AppArgs
    from serving.placement import build_service, compose
    from tests.unit.tiny_models import tiny_settings

    settings = tiny_settings(tmp_path).model_copy(update={"max_image_bytes": 1_000_000})
    small_limit = build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))
    operations = ImageOperations(small_limit, settings.decode_limits())
    data = photo(size=(800, 600))
    assert len(data) < 1_000_000
    outcome = asyncio.run(
        operations.enhance(data, EnhanceOptions.parse(brightness=1.1), ConvertOptions.parse(format="bmp"))
    )
    assert outcome.result.output_bytes > 1_000_000 and Image.open(io.BytesIO(outcome.result.data)).size == (800, 600)
    assert outcome.before is not None and outcome.after is None
    small = asyncio.run(operations.enhance(data, EnhanceOptions.parse(brightness=1.1), ConvertOptions.parse()))
    assert small.after is not None  # a JPEG output is still scored
