"""The SDK answers the same over gRPC as over HTTP (a parity review of the two transports):

- an analysis's whole numbers: a protobuf Struct carries every number as a double, so over gRPC the metadata's
  `image.width`, `file.size_bytes`, `colors.palette[].rgb` and the quality's `metrics.width`, `thresholds_version`
  came back as 96.0, 6168.0, [137.0, ...] where HTTP said 96, 6168, [137, ...] (`range(width)` failed over gRPC);
- a failure the gRPC library itself reports carries the kind HTTP gives the same failure: a request over the
  server's message limit is `too_large` (HTTP 413), a call past its deadline `timeout`.

Both transports run over one in-process service (tiny models): HTTP through the app's TestClient transport, gRPC
through a local server (no Ray, no OIP stubs in this process)."""

import asyncio
import dataclasses
import io
import json
import typing
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serving.client import Client, ImgServeError
from serving.client.http_transport import HttpTransport
from serving.grpc.image_methods import ImageGrpcMethods
from serving.service import InferenceService
from tests.unit.grpc_local import free_port
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


def photo() -> bytes:
    """A JPEG with EXIF (orientation, camera model), so metadata has integers in several sections."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0110], exif[0x0112] = "Cam", 1
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def typed(value: Any) -> str:
    """JSON text: 96 and 96.0 differ here, as they do for a caller's `range()` or `%d`."""
    return json.dumps(value, sort_keys=True)


def comparable(analysis: Any) -> dict[str, Any]:
    """An `Analysis` without what differs by design: the time taken, and scores (float32 on the wire)."""
    document = dataclasses.asdict(analysis)
    document.pop("classification", None)
    return document


class GrpcIngress(ImageGrpcMethods):
    def __init__(self, service: InferenceService, image_operations: Any):
        self.service = service
        self.image_operations = image_operations


def over_both(tmp_path: Path, call: Any, grpc_options: list[tuple[str, int]] | None = None) -> tuple[Any, Any]:
    """`call(client)` with an HTTP client and with a gRPC client of the same service: (HTTP answer, gRPC answer),
    an `ImgServeError` being an answer too."""
    from serving.grpc.generated import image_service_pb2_grpc
    from serving.http.app import create_http_app

    service, settings = tiny_local_service(tmp_path)
    http_app = create_http_app(service, None, settings)

    def answer(client: Client) -> Any:
        try:
            return call(client)
        except ImgServeError as exc:
            return exc

    async def scenario(http: TestClient) -> tuple[Any, Any]:
        server = grpc.aio.server(options=grpc_options or [])
        image_service_pb2_grpc.add_ImageServiceServicer_to_server(
            GrpcIngress(service, http_app.state.image_operations), server
        )
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            over_grpc = Client(f"grpc://127.0.0.1:{port}", retries=0)
            over_http = Client("http://testserver", retries=0)
            over_http._transport = HttpTransport("http://testserver", 30, 0, transport=http._transport)
            return await asyncio.to_thread(lambda: (answer(over_http), answer(over_grpc)))
        finally:
            await server.stop(None)

    with TestClient(http_app) as http:
        return asyncio.run(scenario(http))


def test_an_analysis_has_the_same_types_over_grpc_as_over_http(tmp_path: Path) -> None:
    data = photo()
    over_http, over_grpc = over_both(tmp_path, lambda client: client.analyze(data)[0])
    assert over_grpc.metadata is not None and over_grpc.quality is not None
    assert isinstance(over_grpc.metadata["image"]["width"], int)
    assert all(isinstance(v, int) for v in over_grpc.metadata["colors"]["palette"][0]["rgb"])
    assert isinstance(over_grpc.quality["metrics"]["short_side"], int)
    assert isinstance(over_grpc.quality["score"], float)  # a float stays one, whole or not
    assert typed(comparable(over_grpc)) == typed(comparable(over_http))


def test_a_stream_item_has_the_types_of_an_analysis_over_http(tmp_path: Path) -> None:
    data = photo()
    over_http, over_grpc = over_both(
        tmp_path, lambda client: [item.analysis for item in client.stream([data], fields=["metadata", "quality"])]
    )
    assert typed(comparable(over_grpc[0])) == typed(comparable(over_http[0]))


def test_a_request_over_the_message_limit_is_too_large_on_both(tmp_path: Path) -> None:
    """HTTP answers 413 too_large; gRPC's own RESOURCE_EXHAUSTED "Received message larger than max" came to the
    caller as kind `resource_exhausted`."""
    from serving.client.grpc_transport import error_from_rpc

    class Refused(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.RESOURCE_EXHAUSTED

        def details(self) -> str:
            return "Received message larger than max (5242880 vs. 4194304)"

        def trailing_metadata(self) -> tuple[()]:
            return ()

    error = error_from_rpc(Refused())
    assert (error.code, error.kind) == ("RESOURCE_EXHAUSTED", "too_large")

    big = photo() + bytes(5 * 1024 * 1024)  # a JPEG with trailing bytes: over the server's 4 MiB, not over HTTP's
    limit = [("grpc.max_receive_message_length", 4 * 1024 * 1024)]
    _, over_grpc = over_both(tmp_path, lambda client: client.classify(big), limit)
    assert isinstance(over_grpc, ImgServeError)
    assert (over_grpc.code, over_grpc.kind) == ("RESOURCE_EXHAUSTED", "too_large")


def test_a_call_past_its_deadline_is_a_timeout_on_both() -> None:
    """HTTP's SDK says DEADLINE_EXCEEDED `timeout` when no answer comes in time; over gRPC the kind was
    `deadline_exceeded` (only the server's own timeouts said `timeout`)."""
    from serving.client.errors import from_http_transport_error
    from serving.client.grpc_transport import error_from_rpc

    class Late(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return grpc.StatusCode.DEADLINE_EXCEEDED

        def details(self) -> str:
            return "Deadline Exceeded"

        def trailing_metadata(self) -> tuple[()]:
            return ()

    import httpx

    over_http = from_http_transport_error(httpx.ReadTimeout("timed out"))
    over_grpc = error_from_rpc(Late())
    assert (over_grpc.code, over_grpc.kind) == (over_http.code, over_http.kind) == ("DEADLINE_EXCEEDED", "timeout")


def integer_fields(*classes: type) -> frozenset[str]:
    """The names of the fields typed as integers (int, int | None, tuple[int, ...]) in these dataclasses and the
    dataclasses they hold."""
    names: set[str] = set()
    seen: set[type] = set()

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen.add(cls)
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            members = set(typing.get_args(hints[field.name])) or {hints[field.name]}
            flat = {inner for m in members for inner in (typing.get_args(m) if typing.get_origin(m) is tuple else (m,))}
            if int in flat:
                names.add(field.name)
            for member in flat:
                if isinstance(member, type) and dataclasses.is_dataclass(member):
                    walk(member)

    for cls in classes:
        walk(cls)
    return frozenset(names)


def test_the_sdk_knows_every_integer_field_of_the_analysis_stages() -> None:
    """The SDK's lists are the integer fields of the dataclasses the server sends (a field added there is added
    here, or this fails); no name is an integer in one place and a float in another."""
    from pipelines.metadata import result
    from pipelines.quality.metrics import QualityMetrics
    from pipelines.quality.verdict import QualityReport
    from serving.client.grpc_transport import ANALYSIS_INTEGERS

    metadata_classes = [v for v in vars(result).values() if isinstance(v, type) and dataclasses.is_dataclass(v)]
    assert ANALYSIS_INTEGERS["metadata"] == integer_fields(*metadata_classes)
    assert ANALYSIS_INTEGERS["quality"] == integer_fields(QualityReport, QualityMetrics)


def test_no_server_at_the_address_is_the_same_error_on_both() -> None:
    """HTTP's SDK says UNAVAILABLE `connection` when nothing answers; over gRPC the kind was `unavailable`."""
    port = free_port()  # nothing listens there
    errors = []
    for url in (f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{port}"):
        with Client(url, timeout=5, retries=0) as client, pytest.raises(ImgServeError) as refused:
            client.models()
        errors.append((type(refused.value), refused.value.code, refused.value.kind, refused.value.retryable))
    assert errors[0] == errors[1] == (ImgServeError, "UNAVAILABLE", "connection", True)


def test_the_cli_splits_a_chunk_over_the_grpc_message_limit_as_it_does_a_413(tmp_path: Path) -> None:
    """`imgserve classify` sends images in chunks and, when a chunk fails for one image's reason (`too_large`...),
    sends each alone. Over HTTP a chunk over the body limit is such a 413; over gRPC it was `resource_exhausted`
    and stopped the command."""
    from serving.cli import _chunk_results

    padded = photo() + bytes(3 * 1024 * 1024)  # trailing bytes after the JPEG's end: decoded as the JPEG
    limit = [("grpc.max_receive_message_length", 4 * 1024 * 1024)]  # one image fits, two do not
    _, over_grpc = over_both(
        tmp_path, lambda client: _chunk_results(lambda chunk: client.classify(chunk), [padded, padded]), limit
    )
    assert not isinstance(over_grpc, ImgServeError), over_grpc
    assert [result.model for result in over_grpc] == ["tiny", "tiny"]
