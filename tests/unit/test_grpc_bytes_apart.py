"""The direct gRPC listener hands its servicers each request's bytes fields once, as Python bytes, and the rest as
a message without them (serving.grpc.bytes_apart): the parsed message's own copy of an image is not held for the
call. The servicers read the request as they read the message, over a real local gRPC server."""

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from serving.deployments.direct_ingress import grpc_server
from serving.grpc.bytes_apart import BytesApart, bytes_apart
from serving.grpc.stubs import load
from serving.service import InferenceService
from tests.paths import PROJECT_ROOT
from tests.unit.grpc_local import image_service_channel
from tests.unit.test_grpc_image_service import GrpcIngress, jpeg, pb
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit


def test_the_bytes_are_read_out_and_the_message_kept_without_them() -> None:
    images = [jpeg(), jpeg((300, 200))]
    message = pb().ClassifyRequest(images=images, model="m", top_k=3, confidence_threshold=0.25)
    request = bytes_apart(pb().ClassifyRequest.FromString(message.SerializeToString()))
    assert isinstance(request, BytesApart)
    assert request.images == images and all(type(image) is bytes for image in request.images)
    assert (request.model, request.top_k, request.confidence_threshold) == ("m", 3, 0.25)
    rest = request._message
    assert len(rest.images) == 0 and rest.ByteSize() < 20 < sum(map(len, images))
    single = bytes_apart(pb().ImageOperationRequest(image=images[0], options={"format": "png"}))
    assert single.image == images[0] and dict(single.options) == {"format": "png"}
    assert single._message.image == b""


def oip_raw_contents_apart() -> None:
    """Run in a process of its own (imgserve's `inference` messages and tritonclient's cannot load in one)."""
    from serving.grpc.oip_codec import pb as inference

    infer = inference.ModelInferRequest(model_name="m", raw_input_contents=[b"abc", b"de"])
    infer.inputs.add(name="image", datatype="BYTES", shape=[2])
    request = bytes_apart(infer)
    assert request.raw_input_contents == [b"abc", b"de"]
    assert request.model_name == "m" and [t.name for t in request.inputs] == ["image"]
    print("ok")


def test_oip_raw_contents_are_read_out_too() -> None:
    script = "from tests.unit.test_grpc_bytes_apart import oip_raw_contents_apart; oip_raw_contents_apart()"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_messages_without_bytes_are_returned_as_they_are() -> None:
    listing = pb().ListModelsRequest()
    assert bytes_apart(listing) is listing  # nothing to take apart: the message itself
    assert bytes_apart(b"raw") == b"raw"  # not a protobuf message


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


class RecordingIngress(GrpcIngress):
    """GrpcIngress noting the type of each request its image methods receive."""

    seen: list[str]

    async def Classify(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 - RPC name
        self.seen.append(type(request).__name__)
        return await super().Classify(request, grpc_context)

    async def Convert(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802 - RPC name
        self.seen.append(type(request).__name__)
        return await super().Convert(request, grpc_context)


def test_the_direct_listener_serves_every_image_method_from_the_bytes_apart(service: InferenceService) -> None:
    ingress = RecordingIngress(service)
    ingress.seen = []

    async def main() -> None:
        async with image_service_channel(ingress, grpc_server(1 << 22)) as channel:
            stub = load("image_service_pb2_grpc").ImageServiceStub(channel)
            answer = await stub.Classify(pb().ClassifyRequest(images=[jpeg(), jpeg((64, 64))], top_k=2))
            assert [len(result.predictions) for result in answer.results] == [2, 2]
            analysis = await stub.Analyze(pb().AnalyzeRequest(images=[jpeg()], fields=["metadata"]))
            assert analysis.results[0].metadata["file"]["format"] == "JPEG"
            assert not analysis.results[0].HasField("classification")  # the fields option was read
            converted = await stub.Convert(pb().ImageOperationRequest(image=jpeg(), options={"format": "png"}))
            assert converted.content_type == "image/png" and converted.image.startswith(b"\x89PNG")
            frames = [pb().AnalyzeStreamRequest(image=jpeg(), request_id=str(i), fields=["metadata"]) for i in range(3)]
            answers = [a async for a in stub.AnalyzeStream(iter(frames))]
            assert sorted(a.request_id for a in answers) == ["0", "1", "2"]

    asyncio.run(main())
    assert ingress.seen == ["BytesApart", "BytesApart"]
