"""OIP over HTTP as Triton clients use it beyond plain JSON: compressed request bodies (tritonclient's
`request_compression_algorithm`), bounded when inflated, and the binary tensor extension's header through CORS. A
compressed body is inflated for every route (serving.http.body_encoding): the image API's bodies too."""

import base64
import gzip
import io
import json
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.config.app_args import AppArgs
from serving.errors import BadRequestError, RequestTooLargeError
from serving.http.app import create_http_app
from serving.http.body_encoding import BodyInflater
from serving.placement import build_service, compose
from serving.security.gate import SecurityGate
from serving.security.settings import SecuritySettings
from serving.service import InferenceService
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit

INFER = "/v2/models/tiny/infer"
ORIGIN = "http://app.example"
BODY_LIMIT = 4 * 1024 * 1024
REQUEST = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.25] * 3072}]}
).encode()


def zeros_gzip(size: int) -> bytes:
    """`size` zero bytes gzip-compressed, made a megabyte at a time (a zip bomb: about 1,000 to 1)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    return b"".join([*parts, compressor.flush()])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    settings = tiny_settings(tmp_path_factory.mktemp("t"))
    return build_service(compose(AppArgs(placement="local", default_model="tiny"), settings))


@pytest.fixture(scope="module")
def http(service: InferenceService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = tiny_settings(Path(tmp_path_factory.mktemp("s"))).model_copy(update={"max_request_bytes": BODY_LIMIT})
    gate = SecurityGate("off", None, SecuritySettings(auth="off", cors_origins=[ORIGIN]))
    with TestClient(create_http_app(service, settings=settings, gate=gate), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress), ("GZIP, identity", gzip.compress)]
)
def test_a_compressed_request_is_answered_as_the_plain_one(http: TestClient, encoding: str, compress: object) -> None:
    plain = http.post(INFER, content=REQUEST)
    packed = http.post(INFER, content=compress(REQUEST), headers={"Content-Encoding": encoding})  # type: ignore[operator]
    assert plain.status_code == packed.status_code == 200, packed.text
    assert packed.json()["outputs"] == plain.json()["outputs"]


def test_a_compressed_binary_extension_request_splits_at_the_uncompressed_header_length(http: TestClient) -> None:
    """tritonclient compresses the whole body; Inference-Header-Content-Length counts the JSON head before it."""
    tensor = {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "parameters": {"binary_data_size": 12288}}
    head = json.dumps({"inputs": [tensor], "outputs": [{"name": "logits"}]})
    body = gzip.compress(head.encode() + bytes(12288))
    headers = {"Content-Encoding": "gzip", "Inference-Header-Content-Length": str(len(head))}
    answer = http.post(INFER, content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"] == [1, 5]


def test_a_zip_bomb_is_a_413_at_the_decompressed_limit(http: TestClient) -> None:
    bomb = zeros_gzip(64 * 1024 * 1024)
    assert len(bomb) < BODY_LIMIT // 8  # the compressed body passes the size limit easily
    answer = http.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413, answer.text
    assert answer.json()["kind"] == "too_large" and str(BODY_LIMIT) in answer.json()["error"]


def inflate(body: bytes, encoding: str | None, limit: int, piece: int = 64 * 1024) -> bytes:
    """`body` through the inflater the app uses, fed in pieces as a server receives it."""
    inflater = BodyInflater.for_encoding(encoding, limit)
    if inflater is None:
        return body
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)] or [b""]
    return b"".join(inflater.feed(p, final=i == len(pieces) - 1) for i, p in enumerate(pieces))


def test_inflating_a_bomb_holds_no_more_than_the_limit() -> None:
    bomb = zeros_gzip(256 * 1024 * 1024)
    limit = 2 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(RequestTooLargeError):
            inflate(bomb, "gzip", limit, piece=len(bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit, f"peak {peak} bytes while inflating to a limit of {limit}"


@pytest.mark.parametrize(
    ("body", "encoding", "status", "kind"),
    [
        (b"not compressed at all", "gzip", 400, "bad_request"),
        (gzip.compress(REQUEST)[:-20], "gzip", 400, "bad_request"),  # cut short
        (gzip.compress(REQUEST) + b"trailing", "gzip", 400, "bad_request"),
        (REQUEST, "br", 415, "unsupported_encoding"),
        (REQUEST, "gzip, gzip", 415, "unsupported_encoding"),
    ],
    ids=["not-gzip", "truncated", "trailing-bytes", "brotli", "twice"],
)
def test_a_body_that_does_not_decode_is_a_client_error(
    http: TestClient, body: bytes, encoding: str, status: int, kind: str
) -> None:
    answer = http.post(INFER, content=body, headers={"Content-Encoding": encoding})
    assert (answer.status_code, answer.json()["kind"]) == (status, kind), answer.text


def test_decoding_leaves_a_plain_body_as_it_is() -> None:
    assert BodyInflater.for_encoding(None, 10) is None  # no limit of its own: the body limit already applied
    assert BodyInflater.for_encoding("identity", 10) is None
    with pytest.raises(BadRequestError):
        inflate(zlib.compress(REQUEST), "gzip", len(REQUEST))  # zlib framing sent as gzip
    for piece in (1, 7, 4096):  # any split of the body as it arrives
        assert inflate(gzip.compress(REQUEST), "gzip", len(REQUEST), piece) == REQUEST
    assert inflate(b"", "gzip", 10) == b""  # no body: nothing to inflate


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 60, 30)).save(out, "PNG")
    return out.getvalue()


def test_the_image_api_takes_compressed_bodies_too(http: TestClient) -> None:
    """A raw image, a JSON body and a multipart upload, each gzip-compressed: the answer of the plain request (a raw
    body was 415 'unrecognised image format', the route reading gzip bytes as the image)."""
    image = png()
    plain = http.post("/v1/classify", content=image)
    assert plain.status_code == 200, plain.text
    as_json = json.dumps({"images": [base64.b64encode(image).decode()]}).encode()
    boundary = "b0undary"
    multipart = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    for body, content_type in (
        (image, "image/png"),
        (as_json, "application/json"),
        (multipart, f"multipart/form-data; boundary={boundary}"),
    ):
        headers = {"Content-Encoding": "gzip", "Content-Type": content_type}
        packed = http.post("/v1/classify", content=gzip.compress(body), headers=headers)
        assert packed.status_code == 200, (content_type, packed.text)
        assert [r["predictions"] for r in packed.json()["results"]] == [plain.json()["results"][0]["predictions"]]
    refused = http.post("/v1/classify", content=image, headers={"Content-Encoding": "br"})
    assert (refused.status_code, refused.json()["kind"]) == (415, "unsupported_encoding")
    bomb = http.post("/v1/classify", content=zeros_gzip(16 * 1024 * 1024), headers={"Content-Encoding": "gzip"})
    assert (bomb.status_code, bomb.json()["kind"]) == (413, "too_large")


def test_a_browser_page_may_send_and_read_the_binary_extension_header(http: TestClient) -> None:
    preflight = http.options(
        INFER,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,inference-header-content-length,content-encoding",
        },
    )
    assert preflight.status_code == 200, preflight.text
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"inference-header-content-length", "content-encoding"} <= allowed
    body = json.loads(REQUEST)
    body["parameters"] = {"binary_data_output": True}
    answer = http.post(INFER, json=body, headers={"Origin": ORIGIN})
    assert answer.status_code == 200 and "inference-header-content-length" in answer.headers
    exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
    assert "inference-header-content-length" in exposed


@pytest.mark.parametrize(
    ("origin", "method", "refused"),
    [
        ("https://evil.example", "POST", "origin"),
        (ORIGIN, "PUT", "method"),
        ("https://evil.example", "PATCH", "origin, method"),
    ],
)
def test_a_refused_preflight_is_a_json_error(http: TestClient, origin: str, method: str, refused: str) -> None:
    """Starlette answered it in plain text ("Disallowed CORS origin"), the API's one non-JSON error."""
    answer = http.options(INFER, headers={"Origin": origin, "Access-Control-Request-Method": method})
    assert answer.status_code == 400 and answer.headers["content-type"] == "application/json", answer.text
    body = answer.json()
    assert body["kind"] == "bad_request" and f"({refused} not allowed)" in body["error"], body
    assert "access-control-allow-origin" not in answer.headers or origin == ORIGIN
