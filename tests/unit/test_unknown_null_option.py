"""A name that is no option is refused whatever its value: `{"bogus": null}` in a JSON body's `options` was silently
ignored (the option parsers skipped None before looking at the name) while `{"bogus": ""}` and `?bogus=` were a 400
invalid_option. Over HTTP (the JSON body, both operations), gRPC (its text map cannot carry null: "") and the parsers
that batch jobs and the CLI call."""

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from pipelines.convert import ConvertOptions
from pipelines.enhance import EnhanceOptions
from pipelines.errors import InvalidOptionError
from serving.http.app import create_http_app
from serving.image_ops import OperationOptions
from serving.jobs.operations import operation_spec
from serving.service import InferenceService
from tests.unit.test_operation_options import grpc_answers, photo
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit

BASE = {"convert": {"format": "png"}, "enhance": {"format": "png", "brightness": "1.2"}}
UNKNOWN = [(operation, value) for operation in BASE for value in (None, "")]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


@pytest.fixture(scope="module")
def http(service: InferenceService) -> Iterator[TestClient]:
    with TestClient(create_http_app(service)) as client:
        yield client


def _body(options: dict[str, Any]) -> dict[str, Any]:
    return {"image": base64.b64encode(photo()).decode(), "options": options}


@pytest.mark.parametrize(("operation", "value"), UNKNOWN, ids=[f"{o}-{v!r}" for o, v in UNKNOWN])
def test_an_unknown_body_option_is_refused_whatever_its_value(http: TestClient, operation: str, value: Any) -> None:
    answer = http.post(f"/v1/{operation}", json=_body({**BASE[operation], "bogus": value}))
    assert answer.status_code == 400, answer.text  # null: was 200, the name ignored
    assert answer.json()["kind"] == "invalid_option" and "bogus" in answer.json()["error"]


def test_a_known_option_that_is_null_is_still_not_given(http: TestClient) -> None:
    plain = http.post("/v1/convert", json=_body(BASE["convert"]))
    nulled = http.post("/v1/convert", json=_body({**BASE["convert"], "quality": None, "width": None}))
    assert plain.status_code == 200 and nulled.status_code == 200, nulled.text
    assert nulled.content == plain.content


def test_an_unknown_grpc_option_is_refused_even_when_empty(service: InferenceService) -> None:
    calls = [(operation, {**BASE[operation], "bogus": ""}) for operation in BASE]
    for reply in grpc_answers(service, calls):
        assert isinstance(reply, grpc.aio.AioRpcError) and reply.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "bogus" in (reply.details() or "")


@pytest.mark.parametrize("value", [None, ""])
def test_the_parsers_refuse_an_unknown_name_whatever_its_value(value: Any) -> None:
    with pytest.raises(InvalidOptionError, match="bogus"):
        ConvertOptions.parse(format="png", bogus=value)
    with pytest.raises(InvalidOptionError, match="bogus"):
        EnhanceOptions.parse(brightness="1.2", bogus=value)
    with pytest.raises(InvalidOptionError, match="brightness"):  # a conversion takes no enhancement option
        OperationOptions.parse({"brightness": value}, enhancing=False)
    with pytest.raises(InvalidOptionError, match="bogus"):  # a batch job's options
        operation_spec(["convert"], {"format": "png", "bogus": value}, None, None)
    with pytest.raises(InvalidOptionError, match="bogus"):
        operation_spec(["enhance"], None, {"brightness": "1.2", "bogus": value}, None)
    # known names with an empty value are still not given
    assert ConvertOptions.parse(format="png", quality=value) == ConvertOptions.parse(format="png")
    assert EnhanceOptions.parse(brightness="1.2", contrast=value) == EnhanceOptions.parse(brightness="1.2")
