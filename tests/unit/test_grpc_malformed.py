"""A message that is not a valid protobuf of the method's request type, sent to the direct gRPC listener's server
(`direct_ingress.grpc_server`): INVALID_ARGUMENT with kind `bad_request`, as malformed JSON is a 400 over HTTP. The
gRPC library answered UNKNOWN "Unexpected <class '...DecodeError'>" with no kind and logged a traceback for each."""

import asyncio
import logging
from pathlib import Path

import grpc
import pytest

from serving.deployments.direct_ingress import grpc_server
from serving.grpc.edge import ERROR_KIND_METADATA
from serving.service import InferenceService
from tests.unit.grpc_local import image_service_channel
from tests.unit.test_grpc_image_service import GrpcIngress, jpeg, pb
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit

INVALID_UTF8_MODEL = b"\x12\x02\xff\xfe"  # field 2 (`model`, a string) holding bytes that are not UTF-8
TRUNCATED = b"\x0a\x05abc"  # field 1 announces 5 bytes, 3 follow


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


def kind_of(error: grpc.aio.AioRpcError) -> str | None:
    return dict(error.trailing_metadata() or ()).get(ERROR_KIND_METADATA)


def test_a_malformed_unary_message_is_invalid_argument_and_the_server_goes_on(
    service: InferenceService, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with image_service_channel(GrpcIngress(service), grpc_server(1 << 22)) as channel:
            raw = channel.unary_unary("/imgserve.v1.ImageService/Classify")
            for message in (INVALID_UTF8_MODEL, TRUNCATED):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await raw(message)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
                assert kind_of(refused.value) == "bad_request"
                assert "not a valid Classify request" in refused.value.details()
                assert "<class" not in refused.value.details()
            classify = channel.unary_unary(
                "/imgserve.v1.ImageService/Classify", response_deserializer=pb().ClassifyResponse.FromString
            )
            answer = await classify(pb().ClassifyRequest(images=[jpeg()]).SerializeToString())
            assert len(answer.results) == 1 and answer.results[0].predictions

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert not [r for r in caplog.records if "Unexpected" in r.getMessage() or r.exc_info], caplog.text


def test_a_stream_with_a_malformed_message_ends_invalid_argument(service: InferenceService) -> None:
    """The stream reads ahead of its answers, so the good frame before it may or may not be answered first."""

    async def main() -> None:
        async with image_service_channel(GrpcIngress(service), grpc_server(1 << 22)) as channel:
            good = pb().AnalyzeStreamRequest(image=jpeg(), request_id="a", fields=["metadata"]).SerializeToString()
            stream = channel.stream_stream(
                "/imgserve.v1.ImageService/AnalyzeStream",
                response_deserializer=pb().AnalyzeStreamResponse.FromString,
            )
            call = stream(iter([good, b"\x12\x02\xff\xfe"]))  # field 2 (request_id) not UTF-8
            answers = []
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for answer in call:
                    answers.append(answer)
            assert [a.request_id for a in answers] in ([], ["a"])
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert kind_of(refused.value) == "bad_request"

    asyncio.run(main())
