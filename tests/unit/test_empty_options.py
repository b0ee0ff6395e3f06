"""An empty option value means "not given" on every transport (`serving.image_ops.EMPTY_OPTION_VALUES`): `?quality=`
(what an HTML form sends for a blank field) was a 400 while `{"quality": ""}` in a JSON body and `quality: ""` over
gRPC used the default. Each empty option must give the answer of the same request without it, over the HTTP query,
the HTTP JSON body and gRPC; a name that is no option stays refused with an empty value."""

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from serving.http.app import create_http_app
from serving.image_ops import not_given
from serving.service import InferenceService
from tests.unit.test_operation_options import grpc_answers, photo
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit

BASE = {"convert": {"format": "png"}, "enhance": {"format": "png", "brightness": "1.2"}}
# Every typed option HTTP declares (int, bool, float: FastAPI refused "" for these) and a few text ones.
CONVERT_NAMES = ("quality", "lossless", "progressive", "optimize", "effort", "max_side", "width", "height", "upscale")
CONVERT_NAMES += ("anonymize", "animated", "format", "subsampling", "report")
ENHANCE_NAMES = ("auto", "ops", "contrast", "saturation", "sharpness", "quality", "upscale")
EMPTY = [("convert", name) for name in CONVERT_NAMES] + [("enhance", name) for name in ENHANCE_NAMES]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


@pytest.fixture(scope="module")
def http(service: InferenceService) -> Iterator[TestClient]:
    with TestClient(create_http_app(service)) as client:
        yield client


@pytest.fixture(scope="module")
def image() -> bytes:
    return photo()


def _without(operation: str, name: str) -> dict[str, str]:
    """The operation's base options without `name`: what the request with `name` empty must equal."""
    return {key: value for key, value in BASE[operation].items() if key != name}


def _body(image: bytes, options: dict[str, Any]) -> dict[str, Any]:
    return {"image": base64.b64encode(image).decode(), "options": options}


def test_only_empty_text_and_null_are_not_given() -> None:
    assert not_given("") and not_given(None)
    assert not any(not_given(value) for value in (" ", "0", 0, 0.0, False, "false"))


@pytest.mark.parametrize(("operation", "name"), EMPTY, ids=[f"{o}-{n}" for o, n in EMPTY])
def test_an_empty_query_option_is_not_given(http: TestClient, image: bytes, operation: str, name: str) -> None:
    plain = http.post(f"/v1/{operation}", params=_without(operation, name), content=image)
    empty = http.post(f"/v1/{operation}", params={**BASE[operation], name: ""}, content=image)
    assert plain.status_code == 200, plain.text
    assert empty.status_code == 200, empty.text  # was 400 invalid_option for the typed ones
    assert empty.content == plain.content and empty.headers["content-type"] == plain.headers["content-type"]


@pytest.mark.parametrize(("operation", "name"), EMPTY, ids=[f"{o}-{n}" for o, n in EMPTY])
def test_an_empty_body_option_is_not_given(http: TestClient, image: bytes, operation: str, name: str) -> None:
    plain = http.post(f"/v1/{operation}", json=_body(image, _without(operation, name)))
    empty = http.post(f"/v1/{operation}", json=_body(image, {**BASE[operation], name: ""}))
    assert plain.status_code == 200 and empty.status_code == 200, empty.text
    assert empty.content == plain.content


def test_an_empty_body_option_leaves_the_querys_value(http: TestClient, image: bytes) -> None:
    """Not given in the body: the query's quality stands (an empty body value replaced it with the default)."""
    query = {"format": "jpeg", "quality": "20"}
    from_query = http.post("/v1/convert", params=query, json=_body(image, {}))
    emptied = http.post("/v1/convert", params=query, json=_body(image, {"quality": ""}))
    nulled = http.post("/v1/convert", params=query, json=_body(image, {"quality": None}))
    default = http.post("/v1/convert", params={"format": "jpeg"}, json=_body(image, {}))
    assert from_query.content != default.content  # quality 20 is not jpeg's default of 85
    assert emptied.content == from_query.content and nulled.content == from_query.content
    overridden = http.post("/v1/convert", params=query, json=_body(image, {"quality": "90"}))
    assert overridden.content != from_query.content  # a given body value still overrides


def test_an_empty_grpc_option_is_not_given(http: TestClient, service: InferenceService, image: bytes) -> None:
    calls = [(operation, {**BASE[operation], name: ""}) for operation, name in EMPTY]
    for (operation, name), reply in zip(EMPTY, grpc_answers(service, calls), strict=True):
        assert not isinstance(reply, grpc.aio.AioRpcError), (operation, name, reply.details())
        plain = http.post(f"/v1/{operation}", params=_without(operation, name), content=image)
        assert reply.image == plain.content, (operation, name)


def test_an_unknown_name_is_refused_even_when_empty(http: TestClient, service: InferenceService, image: bytes) -> None:
    query = http.post("/v1/convert", params={"format": "png", "bogus": ""}, content=image)
    body = http.post("/v1/convert", json=_body(image, {"format": "png", "bogus": ""}))
    assert query.status_code == 400 and "bogus" in query.json()["error"]
    assert body.status_code == 400 and "bogus" in body.json()["error"]
    (reply,) = grpc_answers(service, [("convert", {"format": "png", "bogus": ""})])
    assert isinstance(reply, grpc.aio.AioRpcError) and reply.code() == grpc.StatusCode.INVALID_ARGUMENT
