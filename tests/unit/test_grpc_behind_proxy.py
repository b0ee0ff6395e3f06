"""The gRPC methods behind Ray Serve's proxy (serving.grpc.proxy_services in the proxy, serving.grpc.malformed on
the Ingress): a message that does not parse reaches the method as a `MalformedRequest` and is refused
INVALID_ARGUMENT, and a stream that ends with an error status raises so that Ray Serve carries the status (the proxy
takes a stream's status only from the context sent with each answer: a refused stream with no answers was OK).
The real proxy in front of the real Ingress: tests/integration/test_grpc.py (graph target)."""

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from ray.serve._private.grpc_util import gRPCGenericServer
from ray.serve._private.proxy_request_response import gRPCStreamingType
from ray.serve.exceptions import gRPCStatusError
from ray.serve.grpc_util import RayServegRPCContext

from loadtests.server_process import free_port
from serving.errors import ErrorInfo
from serving.grpc import proxy_services
from serving.grpc.edge import ERROR_KIND_METADATA, end_with_error
from serving.grpc.malformed import guarded_methods
from serving.grpc.parsing import MalformedRequest
from serving.grpc.proxy_services import StreamStatusError, quiet_stream_statuses
from serving.grpc.stubs import load

pytestmark = pytest.mark.unit

pb = load("image_service_pb2")
TRUNCATED = b"\x0a\x05abc"  # field 1 announces 5 bytes, 3 follow
REFUSED = ErrorInfo(http_status=401, grpc_code="UNAUTHENTICATED", kind="unauthenticated", message="no key")


def _type_name(request: Any) -> bytes:
    return type(request).__name__.encode()


def _echo_factory(service_method: str, streaming_type: gRPCStreamingType) -> Any:
    """Stands for Ray's proxy behaviours: answers the type of each message its deserializer made."""
    if streaming_type == gRPCStreamingType.UNARY_UNARY:

        async def unary(request: Any, context: Any) -> bytes:
            return _type_name(request)

        return unary
    if streaming_type == gRPCStreamingType.UNARY_STREAM:

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[bytes]:
            yield _type_name(request)

        return unary_stream
    if streaming_type == gRPCStreamingType.STREAM_STREAM:

        async def stream_stream(requests: Any, context: Any) -> AsyncIterator[bytes]:
            async for request in requests:
                yield _type_name(request)

        return stream_stream
    return None


def test_the_proxys_services_parse_without_raising_on_rays_own_server() -> None:
    """Registered on Ray's gRPCGenericServer as its proxy does it: every method of the services, good bytes parsed
    into the method's request type, bad bytes a `MalformedRequest`, unary and streaming alike. (The inference
    service, whose protos clash with tritonclient's in this process, is checked through the real proxy:
    tests/integration/test_grpc.py.)"""

    async def main() -> None:
        server = gRPCGenericServer(_echo_factory)
        proxy_services.add_ImageServiceServicer_to_server(None, server)
        proxy_services.add_HealthServicer_to_server(None, server)
        registered = {method for handlers in server.generic_rpc_handlers for method in handlers[0]._method_handlers}
        services = (
            proxy_services.service_descriptor(pb, "ImageService"),
            proxy_services.service_descriptor(health_pb2, "Health"),
        )
        assert registered == {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
        assert len(registered) == 8
        port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                classify = channel.unary_unary("/imgserve.v1.ImageService/Classify")
                assert await classify(pb.ClassifyRequest(top_k=2).SerializeToString()) == b"ClassifyRequest"
                assert await classify(TRUNCATED) == b"MalformedRequest"
                watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
                assert [a async for a in watch(TRUNCATED)] == [b"MalformedRequest"]
                stream = channel.stream_stream("/imgserve.v1.ImageService/AnalyzeStream")
                answers = [a async for a in stream(iter([b"", TRUNCATED, b""]))]
                assert answers == [b"AnalyzeStreamRequest", b"MalformedRequest", b"AnalyzeStreamRequest"]
        finally:
            await server.stop(None)

    asyncio.run(main())


class _CallContext:
    """What RayServegRPCContext reads from the proxy's call context when it is made."""

    def auth_context(self) -> dict[str, Any]:
        return {}

    def code(self) -> None:
        return None

    def details(self) -> None:
        return None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return []

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def trailing_metadata(self) -> list[tuple[str, str]]:
        return []


class _DirectContext(_CallContext):
    """A grpc.aio context as far as these methods use it: a status set on it is sent."""

    def __init__(self) -> None:
        self.status: tuple[Any, Any] | None = None
        self.trailing: list[tuple[str, str]] = []

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = (code, self.status[1] if self.status else None)

    def set_details(self, details: str) -> None:
        self.status = (self.status[0] if self.status else None, details)

    def set_trailing_metadata(self, trailing: list[tuple[str, str]]) -> None:
        self.trailing = list(trailing)


@guarded_methods(proxy_services.service_descriptor(pb, "ImageService"))
class _Servicer:
    """Two methods shaped like the Ingress's: a stream refused when it opens (no answers), and one per message."""

    def __init__(self) -> None:
        self.calls = 0

    async def Classify(self, request: Any, grpc_context: Any = None) -> Any:  # noqa: N802
        self.calls += 1
        return pb.ClassifyResponse()

    async def AnalyzeStream(self, requests: AsyncIterator[Any], grpc_context: Any = None) -> AsyncIterator[Any]:  # noqa: N802
        async for request in requests:
            if request.request_id == "refuse":
                end_with_error(grpc_context, REFUSED)
                return
            yield pb.AnalyzeStreamResponse(request_id=request.request_id)


async def _collect(responses: AsyncIterator[Any], into: list[str]) -> None:
    async for response in responses:
        into.append(response.request_id)


async def _from(*messages: Any) -> AsyncIterator[Any]:
    for message in messages:
        yield message


def test_a_malformed_unary_message_is_refused_before_the_method_runs() -> None:
    servicer, context = _Servicer(), RayServegRPCContext(_CallContext())
    answer = asyncio.run(servicer.Classify(MalformedRequest("Error parsing message"), grpc_context=context))
    assert answer == pb.ClassifyResponse() and servicer.calls == 0
    assert context.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid Classify request: Error parsing message" in context.details()
    assert (ERROR_KIND_METADATA, "bad_request") in context.trailing_metadata()
    asyncio.run(servicer.Classify(pb.ClassifyRequest(), grpc_context=context))
    assert servicer.calls == 1


@pytest.mark.parametrize(
    ("messages", "answered", "code"),
    [
        ((pb.AnalyzeStreamRequest(request_id="refuse"),), [], grpc.StatusCode.UNAUTHENTICATED),
        (
            (pb.AnalyzeStreamRequest(request_id="a"), pb.AnalyzeStreamRequest(request_id="refuse")),
            ["a"],
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        (
            (pb.AnalyzeStreamRequest(request_id="a"), MalformedRequest("bad"), pb.AnalyzeStreamRequest(request_id="b")),
            ["a"],
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
    ids=["refused-with-no-answers", "refused-after-an-answer", "malformed-message"],
)
def test_a_stream_ending_with_an_error_raises_behind_the_proxy_only(
    messages: tuple[Any, ...], answered: list[str], code: grpc.StatusCode
) -> None:
    proxied, answers = RayServegRPCContext(_CallContext()), []
    with pytest.raises(StreamStatusError):
        asyncio.run(_collect(_Servicer().AnalyzeStream(_from(*messages), grpc_context=proxied), answers))
    assert answers == answered and proxied.code() == code
    direct, answers = _DirectContext(), []
    asyncio.run(_collect(_Servicer().AnalyzeStream(_from(*messages), grpc_context=direct), answers))
    assert answers == answered and direct.status is not None and direct.status[0] == code


def test_a_stream_that_ends_well_does_not_raise() -> None:
    context, answers = RayServegRPCContext(_CallContext()), []
    asyncio.run(_collect(_Servicer().AnalyzeStream(_from(pb.AnalyzeStreamRequest(request_id="a")), context), answers))
    assert answers == ["a"] and not context.code()


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException as raised:  # noqa: BLE001 - the record of what was raised, as logger.exception makes it
        return logging.LogRecord(
            "ray.serve",
            logging.ERROR,
            __file__,
            1,
            "Request failed.",
            None,
            (type(raised), raised, raised.__traceback__),
        )


class _TaskError(Exception):
    """Ray's task error as the proxy receives it: the replica's exception as `cause`."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


def test_the_logs_keep_the_line_of_a_stream_status_but_not_its_tracebacks() -> None:
    quiet_stream_statuses()
    quiet_stream_statuses()  # once per process, however often it is called
    serve_logger = logging.getLogger("ray.serve")
    assert sum(type(f).__name__ == "_QuietStreamStatus" for f in serve_logger.filters) == 1
    wrapped = gRPCStatusError(StreamStatusError("no key"), grpc.StatusCode.UNAUTHENTICATED, "no key")
    in_replica, in_proxy, fault = _record(wrapped), _record(_TaskError(wrapped)), _record(RuntimeError("a fault"))
    for record in (in_replica, in_proxy, fault):
        assert serve_logger.filter(record)  # every line stays
    assert in_replica.exc_info is None and in_proxy.exc_info is None
    assert fault.exc_info is not None  # a real failure keeps its traceback
