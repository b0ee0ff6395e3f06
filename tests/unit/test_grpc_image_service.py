"""`imgserve.v1.ImageService` answers as a gRPC client needs them (a review of the gRPC edge): which image of a
list failed, a status that survives long client text, one code for `too_large`, Convert outputs over gRPC's default
4 MiB, the health protocol's NOT_FOUND, and a stream's request ids and retry hints."""

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from pipelines.limits import DecodeLimits
from serving.grpc.image_methods import ImageGrpcMethods
from serving.image_ops import ImageOperations
from serving.service import InferenceService
from tests.unit.grpc_local import image_service_stub
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


def jpeg(size: tuple[int, int] = (96, 64)) -> bytes:
    rng = np.random.default_rng(1)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


class GrpcIngress(ImageGrpcMethods):
    def __init__(self, service: InferenceService, max_message_bytes: int | None = None):
        self.service = service
        self.image_operations = ImageOperations(service, DecodeLimits())
        if max_message_bytes is not None:
            self.max_message_bytes = max_message_bytes


def pb() -> Any:
    from serving.grpc.generated import image_service_pb2

    return image_service_pb2


async def refusal(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


def test_the_status_names_the_image_of_a_list_that_failed(service: InferenceService) -> None:
    """HTTP said "(image index 1)", gRPC only what was wrong: a client of 100 images could not tell which."""

    async def scenario() -> None:
        async with image_service_stub(GrpcIngress(service)) as stub:
            for method in (stub.Classify, stub.Analyze):
                request = (pb().ClassifyRequest if method is stub.Classify else pb().AnalyzeRequest)(
                    images=[jpeg(), b"\xff\xd8broken", jpeg()]
                )
                error = await refusal(method(request))
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().endswith("(image index 1)")

    asyncio.run(scenario())


def test_a_long_client_name_in_a_message_keeps_the_status(service: InferenceService) -> None:
    """The unknown model's name was quoted in full: past 16 KiB of grpc-message the status was replaced by
    RESOURCE_EXHAUSTED "Stream removed", NOT_FOUND and the kind lost (past 8 KiB now and then)."""

    async def scenario() -> None:
        async with image_service_stub(GrpcIngress(service)) as stub:
            for name in ("m" * 20_000, "\u00e9" * 9_000):
                call = stub.Classify(pb().ClassifyRequest(images=[jpeg()], model=name))
                error = await refusal(call)
                assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()[:200]
                assert len(error.details().encode()) <= 1500 and error.details().endswith("\u2026")
                assert ("imgserve-error-kind", "unknown_model") in tuple(await call.trailing_metadata())
            options = {f"unknown_{i}": "x" for i in range(2000)}
            error = await refusal(stub.Convert(pb().ImageOperationRequest(image=jpeg(), options=options)))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(scenario())


def test_an_image_over_the_limits_is_resource_exhausted_like_every_too_large(service: InferenceService) -> None:
    """An image over the byte or pixel limit was INVALID_ARGUMENT, too many images RESOURCE_EXHAUSTED: the SDK
    raised a different code for the same error over HTTP (413) and gRPC."""
    big = io.BytesIO()
    Image.new("L", (12_000, 10_000)).save(big, "PNG")

    async def scenario() -> None:
        async with image_service_stub(GrpcIngress(service)) as stub:
            call = stub.Classify(pb().ClassifyRequest(images=[big.getvalue()]))
            error = await refusal(call)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "pixels" in error.details()
            assert ("imgserve-error-kind", "too_large") in tuple(await call.trailing_metadata())

    asyncio.run(scenario())


def test_an_output_over_the_message_limit_is_refused_and_the_sdk_takes_large_ones(
    service: InferenceService, tmp_path: Path
) -> None:
    """A BMP of a 1600x1200 photo (5.8 MB) failed in the SDK with gRPC's default 4 MiB receive limit; an output over
    the server's own limit failed with a bare "Sent message larger than max" after all the work."""
    from serving.client import Client

    photo = jpeg((1600, 1200))

    async def refused() -> None:
        async with image_service_stub(GrpcIngress(service, max_message_bytes=2 * 1024 * 1024)) as stub:
            call = stub.Convert(pb().ImageOperationRequest(image=photo, options={"format": "bmp"}))
            error = await refusal(call)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_side" in error.details()
            assert ("imgserve-error-kind", "too_large") in tuple(await call.trailing_metadata())

    asyncio.run(refused())

    from tests.unit.grpc_local import free_port

    async def served_to_the_sdk() -> None:
        from serving.grpc.generated import image_service_pb2_grpc

        server = grpc.aio.server(options=[("grpc.max_send_message_length", 128 * 1024 * 1024)])
        image_service_pb2_grpc.add_ImageServiceServicer_to_server(GrpcIngress(service), server)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            result = await asyncio.to_thread(lambda: Client(f"grpc://127.0.0.1:{port}").convert(photo, format="bmp"))
            assert len(result.data) > 4 * 1024 * 1024 and Image.open(io.BytesIO(result.data)).size == (1600, 1200)
        finally:
            await server.stop(None)

    asyncio.run(served_to_the_sdk())


def test_health_check_of_an_unknown_service_is_not_found(service: InferenceService) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from serving.grpc.generated import image_service_pb2_grpc
    from tests.unit.grpc_local import free_port

    async def scenario() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(GrpcIngress(service), server)
        image_service_pb2_grpc.add_ImageServiceServicer_to_server(GrpcIngress(service), server)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                known = await health.Check(health_pb2.HealthCheckRequest(service="imgserve.v1.ImageService"))
                assert known.status == health_pb2.HealthCheckResponse.SERVING
                error = await refusal(health.Check(health_pb2.HealthCheckRequest(service="no.such.Service")))
                assert error.code() == grpc.StatusCode.NOT_FOUND
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_a_stream_logs_its_frames_under_its_ids_and_says_when_to_retry(
    service: InferenceService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every frame of a stream was logged (and its internal error quoted) under a random id; a frame refused for the
    key's quota carried no retry hint, where a unary call has `retry-after`."""
    from serving.errors import ServiceError

    class QuotaUsedUp(ServiceError):
        http_status, grpc_code, kind, retry_after_s = 429, "RESOURCE_EXHAUSTED", "quota_exceeded", 75.0

    async def analyze(images: list[bytes], options: Any = None) -> Any:
        if images[0] == b"quota":
            raise QuotaUsedUp("daily quota reached")
        raise RuntimeError("a fault with /srv/secret in it")

    monkeypatch.setattr(service, "analyze", analyze)

    async def frames() -> AsyncIterator[Any]:
        yield pb().AnalyzeStreamRequest(image=b"boom", request_id="frame-1")
        yield pb().AnalyzeStreamRequest(image=b"quota", request_id="frame-2")

    async def scenario() -> None:
        async with image_service_stub(GrpcIngress(service)) as stub:
            call = stub.AnalyzeStream(frames(), metadata=(("request_id", "stream-9"),))
            replies = [reply async for reply in call]
            assert ("request_id", "stream-9") in tuple(await call.trailing_metadata())
        internal, quota = (reply.error for reply in replies)
        assert (
            internal.kind == "internal" and "stream-9/frame-1" in internal.message and "secret" not in internal.message
        )
        assert quota.kind == "quota_exceeded" and quota.retry_after_s == 75.0

    asyncio.run(scenario())


def test_a_classification_names_its_version_and_a_client_can_pin_one(service: InferenceService) -> None:
    """HTTP answers `model_version` and takes `?model_version=`; gRPC had neither, so during a canary a gRPC caller
    could not tell which version answered."""
    from serving.requests import ImageOptions

    served = asyncio.run(service.classify([jpeg()], ImageOptions.parse()))[0].model_version
    assert served

    async def scenario() -> None:
        async with image_service_stub(GrpcIngress(service)) as stub:
            reply = await stub.Classify(pb().ClassifyRequest(images=[jpeg()], model_version=served))
            assert reply.results[0].model_version == served
            analysis = await stub.Analyze(pb().AnalyzeRequest(images=[jpeg()], fields=["classification"]))
            assert analysis.results[0].classification.model_version == served
            error = await refusal(stub.Classify(pb().ClassifyRequest(images=[jpeg()], model_version="987")))
            assert (
                error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
                and "987" in error.details()
            )
            error = await refusal(stub.Classify(pb().ClassifyRequest(images=[jpeg()], model_version="v1")))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(scenario())


def test_images_received_over_grpc_are_counted(service: InferenceService) -> None:
    """`imgserve_images_total` and `imgserve_request_bytes_total` counted only the HTTP routes' images: the
    dashboard's images/s left out every gRPC client."""
    from prometheus_client import REGISTRY

    def counted(endpoint: str) -> float:
        return REGISTRY.get_sample_value("imgserve_images_total", {"endpoint": endpoint, "protocol": "grpc"}) or 0.0

    def received() -> float:
        return REGISTRY.get_sample_value("imgserve_request_bytes_total", {"protocol": "grpc"}) or 0.0

    images = [jpeg(), jpeg((64, 64)), jpeg((32, 48))]
    before = {name: counted(name) for name in ("Classify", "Analyze", "Convert")}, received()

    async def scenario() -> None:
        async with image_service_stub(GrpcIngress(service)) as stub:
            await stub.Classify(pb().ClassifyRequest(images=images))
            await stub.Analyze(pb().AnalyzeRequest(images=images[:2], fields=["quality"]))
            await stub.Convert(pb().ImageOperationRequest(image=images[0], options={"format": "png"}))

    asyncio.run(scenario())
    moved = {name: counted(name) - value for name, value in before[0].items()}
    assert moved == {"Classify": 3, "Analyze": 2, "Convert": 1}
    assert received() - before[1] == sum(map(len, images)) + len(images[0]) + len(images[1]) + len(images[0])


def test_the_sdk_over_grpc_names_the_version_that_answered(service: InferenceService) -> None:
    from serving.client import Client
    from serving.grpc.generated import image_service_pb2_grpc
    from tests.unit.grpc_local import free_port

    async def scenario() -> str:
        server = grpc.aio.server()
        image_service_pb2_grpc.add_ImageServiceServicer_to_server(GrpcIngress(service), server)
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            result = await asyncio.to_thread(lambda: Client(f"grpc://127.0.0.1:{port}").classify([jpeg()]))
            return result[0].model_version
        finally:
            await server.stop(None)

    assert asyncio.run(scenario()) != ""


def test_a_streams_own_frames_wait_for_a_slot_instead_of_being_refused(service: InferenceService) -> None:
    """With `max_inflight: 1` (README's latency setting for a 2-core replica), a stream of frames sent as fast as
    the client could had every frame after the first refused `overloaded`: the stream's own frames took the slots.
    They now wait for the stream's earlier frames; a bad frame stays its own error."""
    from serving.admission import REPLICA_LIMIT

    images = [jpeg(), b"not an image", jpeg((64, 64)), jpeg((80, 72))]

    async def frames() -> AsyncIterator[Any]:
        for i, image in enumerate(images):
            yield pb().AnalyzeStreamRequest(image=image, request_id=f"f{i}")

    async def scenario() -> list[Any]:
        async with image_service_stub(GrpcIngress(service)) as stub:
            return [reply async for reply in stub.AnalyzeStream(frames())]

    REPLICA_LIMIT.limit = 1
    try:
        replies = asyncio.run(scenario())
    finally:
        REPLICA_LIMIT.limit = None
    kinds = [reply.error.kind if reply.HasField("error") else "ok" for reply in replies]
    assert kinds[0] == "ok" and kinds[2:] == ["ok", "ok"], kinds
    assert kinds[1] not in ("ok", "overloaded"), kinds
