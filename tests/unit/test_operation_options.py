"""Convert/Enhance options parse the same way over HTTP and gRPC (`serving.image_ops.OperationOptions`): gRPC's
text map refused `quality=80.0` and `report=json`, which `/v1/convert` and `/v1/enhance` accept as query
parameters. Over gRPC `report` is accepted and changes nothing: a gRPC answer always carries both the image and
the report, which HTTP's `report=json` only moves from headers into a JSON body; a bad value is refused alike."""

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pipelines.errors import InvalidOptionError
from pipelines.limits import DecodeLimits
from serving.grpc.image_methods import ImageGrpcMethods
from serving.http.app import create_http_app
from serving.image_ops import INTEGER_OPTIONS, ImageOperations, OperationOptions
from serving.jobs.operations import operation_spec, parse_pairs
from serving.service import InferenceService
from tests.unit.grpc_local import image_service_stub
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit

ACCEPTED = [
    ("convert", {"format": "webp", "quality": "80.0"}),
    ("convert", {"format": "jpeg", "max_side": "64.0", "report": "json"}),
    ("convert", {"format": "png", "report": "image"}),
    ("enhance", {"brightness": "1.2", "format": "jpeg", "quality": "80.0", "report": "json"}),
]
REFUSED = [
    ("convert", {"format": "webp", "quality": "80.5"}, "quality"),
    ("convert", {"format": "jpeg", "report": "xml"}, "report"),
    ("enhance", {"brightness": "1.2", "report": "pdf"}, "report"),
    ("enhance", {"brightness": "1.2", "effort": "two"}, "effort"),
]


def photo() -> bytes:
    rng = np.random.default_rng(7)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def test_integral_numbers_are_integers_and_report_is_an_option() -> None:
    assert INTEGER_OPTIONS == {"quality", "effort", "max_side", "width", "height"}
    for quality in ("80", "80.0", " 80 ", 80, 80.0):
        parsed = OperationOptions.parse({"format": "webp", "quality": quality}, enhancing=False)
        assert parsed.convert.quality == 80 and parsed.enhance is None and parsed.report == "image"
    for quality in ("80.5", 80.5, "eighty"):
        with pytest.raises(InvalidOptionError, match="quality="):
            OperationOptions.parse({"format": "webp", "quality": quality}, enhancing=False)
    assert OperationOptions.parse({"report": "JSON"}, enhancing=False).report == "json"
    with pytest.raises(InvalidOptionError, match="choose image or json"):
        OperationOptions.parse({"report": "xml"}, enhancing=False)
    enhanced = OperationOptions.parse({"ops": "clahe", "brightness": "1.5", "width": "64.0"}, enhancing=True)
    assert enhanced.enhance is not None and enhanced.enhance.ops == ("clahe",)
    assert enhanced.enhance.factors == {"brightness": 1.5} and enhanced.convert.width == 64
    with pytest.raises(InvalidOptionError, match="unknown conversion options"):
        OperationOptions.parse({"brightness": "1.5"}, enhancing=False)  # a conversion takes no enhancement


def test_batch_jobs_read_integer_options_as_the_image_routes_do() -> None:
    """A batch job's `convert` options (query pairs or JSON numbers) were parsed without the integer reading: 80.0
    was a 400 on `/v1/batch` and 80 on `/v1/convert`. Stored as read, so each item runs with 80."""
    for quality in ("80.0", 80.0, " 80 "):
        spec = operation_spec(["convert"], {"format": "webp", "quality": quality, "max_side": "64.0"}, None, None)
        assert spec is not None and spec["convert"] == {"format": "webp", "quality": 80, "max_side": 64}
    spec = operation_spec([], parse_pairs("format=jpeg,width=32.0"), parse_pairs("brightness=1.5"), None)
    assert spec is not None and spec["convert"]["width"] == 32 and spec["enhance"] == {"brightness": "1.5"}
    with pytest.raises(InvalidOptionError, match="quality="):
        operation_spec(["convert"], {"format": "webp", "quality": "80.5"}, None, None)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


@pytest.fixture(scope="module")
def http(service: InferenceService) -> Iterator[TestClient]:
    with TestClient(create_http_app(service)) as client:
        yield client


class GrpcIngress(ImageGrpcMethods):
    def __init__(self, service: InferenceService):
        self.service = service
        self.image_operations = ImageOperations(service, DecodeLimits())


def grpc_answers(service: InferenceService, calls: list[tuple[str, dict[str, str]]]) -> list[Any]:
    """Each call's reply, or its `AioRpcError`."""
    from serving.grpc.generated import image_service_pb2 as pb

    async def scenario() -> list[Any]:
        answers: list[Any] = []
        async with image_service_stub(GrpcIngress(service)) as stub:
            for operation, options in calls:
                method = stub.Convert if operation == "convert" else stub.Enhance
                try:
                    answers.append(await method(pb.ImageOperationRequest(image=photo(), options=options)))
                except grpc.aio.AioRpcError as error:
                    answers.append(error)
        return answers

    return asyncio.run(scenario())


def test_both_transports_accept_the_same_options(http: TestClient, service: InferenceService) -> None:
    for (operation, options), reply in zip(ACCEPTED, grpc_answers(service, ACCEPTED), strict=True):
        answer = http.post(f"/v1/{operation}", params=options, content=photo())
        assert answer.status_code == 200, (operation, options, answer.text)
        assert not isinstance(reply, grpc.aio.AioRpcError), (operation, options, reply.details())
        expected = answer.json()["format"] if options.get("report") == "json" else answer.headers["x-imgserve-format"]
        assert reply.report["format"] == expected and reply.image  # gRPC's answer: the image and its report


def test_both_transports_refuse_the_same_options(http: TestClient, service: InferenceService) -> None:
    calls = [(operation, options) for operation, options, _ in REFUSED]
    for (operation, options, name), reply in zip(REFUSED, grpc_answers(service, calls), strict=True):
        answer = http.post(f"/v1/{operation}", params=options, content=photo())
        assert answer.status_code == 400 and name in answer.json()["error"], (operation, options, answer.text)
        assert isinstance(reply, grpc.aio.AioRpcError), (operation, options)
        assert reply.code() == grpc.StatusCode.INVALID_ARGUMENT and name in reply.details(), reply.details()
