"""`/v1/metadata` reads a JSON body's `options` with the parser every image route uses (`anonymize: true` drops GPS,
an unknown or invalid option is a 400), multipart text fields are refused rather than dropped, and an empty model
name (`?model=`) is a 400 rather than the default model. Local placement with the tiny test models (no Ray)."""

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.errors import BadRequestError
from serving.grpc.image_methods import ImageGrpcMethods
from serving.http.app import create_http_app
from serving.requests import ImageOptions
from serving.service import InferenceService
from tests.paths import EXIF_SAMPLES, require
from tests.unit.grpc_local import image_service_stub
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit

GPS_IFD = 0x8825


def jpeg_with_gps() -> bytes:
    """A small JPEG whose EXIF carries a GPS position (43.467 N, 11.885 E)."""
    exif = Image.Exif()
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (43.0, 28.0, 2.81), 3: "E", 4: (11.0, 53.0, 6.46)})
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 80, 40)).save(out, "JPEG", exif=exif)
    return out.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


@pytest.fixture(scope="module")
def http(service: InferenceService) -> Iterator[TestClient]:
    with TestClient(create_http_app(service)) as client:
        yield client


def json_body(data: bytes, options: str) -> dict[str, Any]:
    """A JSON image request written by hand, so `options` may hold what `json.dumps` will not write (NaN, 1e400)."""
    text = f'{{"image": "{base64.b64encode(data).decode()}", "options": {options}}}'
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


def gps_of(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["gps"]


def test_the_fixture_image_has_a_position(http: TestClient) -> None:
    assert gps_of(http.post("/v1/metadata", content=jpeg_with_gps()))["latitude_deg"] == pytest.approx(43.4674, 1e-4)


@pytest.mark.parametrize("anonymize", ["true", '"yes"'])
def test_json_body_anonymize_drops_gps(http: TestClient, anonymize: str) -> None:
    """As `/v1/analyze?fields=metadata` and `?anonymize=true` do (lax booleans as in the query: "yes" is true)."""
    assert gps_of(http.post("/v1/metadata", **json_body(jpeg_with_gps(), f'{{"anonymize": {anonymize}}}'))) is None


def test_json_body_anonymize_matches_analyze(http: TestClient) -> None:
    body = json_body(jpeg_with_gps(), '{"anonymize": true}')
    analyzed = http.post("/v1/analyze", params={"fields": "metadata"}, **body)
    assert analyzed.status_code == 200 and analyzed.json()["results"][0]["metadata"]["gps"] is None
    assert http.post("/v1/metadata", **body).json()["results"] == [analyzed.json()["results"][0]["metadata"]]


def test_the_body_overrides_the_query_as_on_the_other_routes(http: TestClient) -> None:
    body = json_body(jpeg_with_gps(), '{"anonymize": true}')
    assert gps_of(http.post("/v1/metadata", params={"anonymize": "false"}, **body)) is None


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ('{"bogus": 1}', "bogus"),
        ('{"anonymise": true}', "anonymise"),
        ('{"top_k": 1e400}', "top_k"),
        ('{"top_k": 0}', "top_k"),
        ('{"confidence_threshold": NaN}', "confidence_threshold"),
        ('{"anonymize": "maybe"}', "anonymize"),
        ('{"model": ""}', "model"),
    ],
)
def test_unknown_or_invalid_body_options_are_400(http: TestClient, options: str, named: str) -> None:
    response = http.post("/v1/metadata", **json_body(jpeg_with_gps(), options))
    assert response.status_code == 400, response.text
    assert response.json()["kind"] == "bad_request" and named in response.json()["error"]


def test_options_metadata_does_not_use_are_accepted_as_on_analyze(http: TestClient) -> None:
    """`top_k` changes nothing on `/v1/analyze?fields=metadata` and nothing here (`anonymize` on /v1/classify alike)."""
    options = '{"top_k": 3, "confidence_threshold": 0.5, "anonymize": true}'
    assert gps_of(http.post("/v1/metadata", **json_body(jpeg_with_gps(), options))) is None
    analyzed = http.post("/v1/analyze", params={"fields": "metadata", "top_k": 3}, content=jpeg_with_gps())
    assert analyzed.status_code == 200, analyzed.text


@pytest.mark.parametrize("route", ["/v1/metadata", "/v1/analyze", "/v1/classify"])
def test_a_multipart_text_field_is_refused_not_dropped(http: TestClient, route: str) -> None:
    files = [("image", ("a.jpg", jpeg_with_gps(), "image/jpeg")), ("anonymize", (None, "true"))]
    response = http.post(route, files=files)
    assert response.status_code == 400, response.text
    assert "'anonymize'" in response.json()["error"] and "query" in response.json()["error"]


def test_a_multipart_body_without_its_closing_boundary_says_so(http: TestClient) -> None:
    """python-multipart keeps no part the closing boundary did not complete: it was 'no field named image'."""
    head = b'--XX\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    one = head + jpeg_with_gps() + b"\r\n"
    for body in (one, head[:30], one + b"--XX\r\n" + head[6:] + jpeg_with_gps()[:500]):  # the last: 1 part of 2 came
        answer = http.post("/v1/metadata", content=body, headers={"content-type": "multipart/form-data; boundary=XX"})
        assert answer.status_code == 400 and "before its closing boundary" in answer.json()["error"], answer.text
    whole = head + jpeg_with_gps() + b"\r\n--XX--\r\n"
    kept = http.post("/v1/metadata", content=whole, headers={"content-type": "multipart/form-data; boundary=XX"})
    assert kept.status_code == 200, kept.text


@pytest.mark.parametrize("count", [257, 300])
def test_too_many_multipart_images_name_the_limit(http: TestClient, service: InferenceService, count: int) -> None:
    """Starlette's 'Maximum number of files is 257' named a limit one above the server's (256)."""
    files = [("image", ("a.jpg", b"x", "image/jpeg"))] * count
    answer = http.post("/v1/classify", files=files)
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"].endswith(f"images in one request; the limit is {service.max_images_per_request}")


def test_multipart_with_the_query_option_still_anonymizes(http: TestClient) -> None:
    files = [("image", ("a.jpg", jpeg_with_gps(), "image/jpeg"))]
    assert gps_of(http.post("/v1/metadata", params={"anonymize": "true"}, files=files)) is None


def test_the_walkthrough_photo_with_body_anonymize_has_no_gps(http: TestClient) -> None:
    data = require(EXIF_SAMPLES / "jpg" / "gps" / "DSCN0010.jpg").read_bytes()
    assert gps_of(http.post("/v1/metadata", content=data)) is not None
    assert gps_of(http.post("/v1/metadata", **json_body(data, '{"anonymize": true}'))) is None


@pytest.mark.parametrize(
    ("method", "route"), [("POST", "/v1/classify"), ("POST", "/v1/analyze"), ("GET", "/v1/categories")]
)
def test_an_empty_model_name_is_400_not_the_default(http: TestClient, method: str, route: str) -> None:
    response = http.request(method, route, params={"model": ""}, content=jpeg_with_gps() if method == "POST" else None)
    assert response.status_code == 400, response.text
    assert response.json()["kind"] == "bad_request" and "model" in response.json()["error"]


def test_an_empty_model_name_in_a_json_body_is_400(http: TestClient) -> None:
    response = http.post("/v1/classify", **json_body(jpeg_with_gps(), '{"model": ""}'))
    assert response.status_code == 400 and "model" in response.json()["error"], response.text


def test_the_parser_refuses_an_empty_model_and_keeps_an_omitted_one() -> None:
    """gRPC's `model` is proto3 (empty = not given, documented as the default): it passes None, not ""."""
    with pytest.raises(BadRequestError, match="model"):
        ImageOptions.parse(model="")
    assert ImageOptions.parse(model=None).model is None and ImageOptions.parse(model="tiny").model == "tiny"


class GrpcIngress(ImageGrpcMethods):
    def __init__(self, service: InferenceService):
        self.service = service


def test_grpc_has_no_such_gap(service: InferenceService) -> None:
    """gRPC has no metadata RPC and no options map for the image API: `Analyze`'s typed `anonymize` field reaches
    the same parser; its `model` is a proto3 string, empty = not given, documented as the default classifier."""
    from serving.grpc.generated import image_service_pb2 as pb

    async def scenario() -> tuple[Any, Any, Any]:
        async with image_service_stub(GrpcIngress(service)) as stub:
            request = pb.AnalyzeRequest(images=[jpeg_with_gps()], fields=["metadata"])
            plain = await stub.Analyze(request)
            request.anonymize = True
            anonymized = await stub.Analyze(request)
            classified = await stub.Classify(pb.ClassifyRequest(images=[jpeg_with_gps()], model=""))
            return plain, anonymized, classified

    plain, anonymized, classified = asyncio.run(scenario())
    assert plain.results[0].metadata["gps"]["latitude_deg"] == pytest.approx(43.4674, 1e-4)
    assert anonymized.results[0].metadata["gps"] is None
    assert classified.results[0].model == "tiny"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('{{"image": "{image}", "options": {{"topk": 3}}}}', "topk: unknown; known: model, model_version, top_k, "),
        ('{{"image": "{image}", "model": ""}}', "model: unknown; known: image, images, options"),
    ],
)
def test_an_unknown_json_field_is_named_with_the_known_ones(http: TestClient, body: str, expected: str) -> None:
    """As a misspelt query parameter is: the client learns where options go, not pydantic's 'Extra inputs'."""
    image = base64.b64encode(jpeg_with_gps()).decode()
    response = http.post("/v1/classify", content=body.format(image=image), headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert expected in response.json()["error"], response.text
