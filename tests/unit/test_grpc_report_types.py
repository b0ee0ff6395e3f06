"""The SDK's Convert/Enhance report has the same types over gRPC as over HTTP: a protobuf Struct carries every
number as a double, so the gRPC report said `frames 1.0, input_bytes 1420341.0, size [2048.0, 1365.0]` where HTTP
said 1, 1420341 and [2048, 1365]. Both transports over the same in-process service (tiny models): the HTTP app's
`report=json` answer (what the SDK's HTTP transport reads) and the SDK over a local gRPC server."""

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pipelines.limits import DecodeLimits
from serving.grpc.image_methods import ImageGrpcMethods
from serving.image_ops import ImageOperations
from serving.service import InferenceService
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


class GrpcIngress(ImageGrpcMethods):
    def __init__(self, service: InferenceService):
        self.service = service
        self.image_operations = ImageOperations(service, DecodeLimits())


def photo() -> bytes:
    rng = np.random.default_rng(7)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def typed(report: dict[str, Any]) -> str:
    """The report as JSON text: 1 and 1.0 differ here, as they do for a caller's `range()` or `%d`."""
    return json.dumps(report, sort_keys=True)


CASES = [
    ("convert", {"format": "webp", "max_side": "200"}),
    ("convert", {"format": "png"}),
    ("enhance", {"brightness": "2", "contrast": "1.5"}),  # factors stay floats: 2.0 on HTTP too
]


@pytest.mark.parametrize(("operation", "options"), CASES)
def test_the_grpc_report_has_the_types_of_the_http_report(
    tmp_path: Path, operation: str, options: dict[str, str]
) -> None:
    from serving.client import Client
    from serving.grpc.generated import image_service_pb2_grpc
    from serving.http.app import create_http_app
    from tests.unit.grpc_local import free_port

    service, settings = tiny_local_service(tmp_path)
    data = photo()
    with TestClient(create_http_app(service, None, settings)) as http:
        answer = http.post(f"/v1/{operation}", params={**options, "report": "json"}, content=data)
        assert answer.status_code == 200, answer.text
        over_http = answer.json()
        over_http.pop("image_base64")

    async def over_grpc() -> dict[str, Any]:
        server = grpc.aio.server()
        image_service_pb2_grpc.add_ImageServiceServicer_to_server(GrpcIngress(service), server)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            client = Client(f"grpc://127.0.0.1:{port}")
            method = client.convert if operation == "convert" else client.enhance
            return (await asyncio.to_thread(lambda: method(data, **options))).report
        finally:
            await server.stop(None)

    report = asyncio.run(over_grpc())
    assert isinstance(report["input_bytes"], int) and all(isinstance(side, int) for side in report["size"])
    assert isinstance(report["compression_ratio"], float)
    assert typed(report) == typed(over_http)


def test_whole_numbers_outside_the_integer_fields_stay_floats() -> None:
    from google.protobuf import struct_pb2

    from serving.client.grpc_transport import report_from_proto

    struct = struct_pb2.Struct()
    struct.update({"frames": 3, "size": [640, 480], "compression_ratio": 2.0, "operations": [{"factor": 2.0}]})
    assert typed(report_from_proto(struct)) == typed(
        {"frames": 3, "size": [640, 480], "compression_ratio": 2.0, "operations": [{"factor": 2.0}]}
    )
