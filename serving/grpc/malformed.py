"""Messages that are not a valid protobuf of the method's request type (truncated, invalid UTF-8 in a string field,
wrong wire types) are refused INVALID_ARGUMENT with kind `bad_request`, as a malformed JSON body is a 400 over HTTP.

Without this the gRPC library answers such a message itself: UNKNOWN "Unexpected <class '...DecodeError'>: ...", no
`imgserve-error-kind`, not counted in the metrics, and a traceback in the replica's log for every message (a cheap way
to flood it). An interceptor on the direct listeners (serving.deployments.direct_ingress) swaps each method's request
deserializer for one that returns a `MalformedRequest` instead of raising, and its behaviour for one that refuses it:
a unary call before the servicer runs, a stream when it reads the malformed message (answers already sent stand).
A message that parses reaches the servicer with its bytes fields held once (serving.grpc.bytes_apart).
"""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from serving.grpc.bytes_apart import bytes_apart
from serving.grpc.edge import ERROR_KIND_METADATA, status_details
from serving.metrics import ERRORS, REQUESTS

KIND = "bad_request"


@dataclass(frozen=True)
class MalformedRequest:
    """What the safe deserializer returns for bytes that do not parse."""

    reason: str


def _safe(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            message = deserialize(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and whatever a parser raises on bad bytes
            return MalformedRequest(str(exc)[:200] or type(exc).__name__)
        return bytes_apart(message)

    return parse


async def _refuse(endpoint: str, context: Any, request: MalformedRequest) -> None:
    ERRORS.labels(endpoint, KIND).inc()
    REQUESTS.labels(endpoint, "grpc", "", "INVALID_ARGUMENT").inc()
    message = status_details(f"the message is not a valid {endpoint} request: {request.reason}")
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message, ((ERROR_KIND_METADATA, KIND),))


def _unary(endpoint: str, behaviour: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(request: Any, context: Any) -> Any:
        if isinstance(request, MalformedRequest):
            await _refuse(endpoint, context, request)
        return await behaviour(request, context)

    return call


def _unary_stream(endpoint: str, behaviour: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        if isinstance(request, MalformedRequest):
            await _refuse(endpoint, context, request)
        async for response in behaviour(request, context):
            yield response

    return call


def _checked(endpoint: str, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
    async def each() -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, MalformedRequest):
                await _refuse(endpoint, context, request)
            yield request

    return each()


def _stream_unary(endpoint: str, behaviour: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(requests: AsyncIterator[Any], context: Any) -> Any:
        return await behaviour(_checked(endpoint, requests, context), context)

    return call


def _stream_stream(endpoint: str, behaviour: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def call(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for response in behaviour(_checked(endpoint, requests, context), context):
            yield response

    return call


def guarded(handler: grpc.RpcMethodHandler, endpoint: str) -> grpc.RpcMethodHandler:
    """`handler` with a request deserializer that does not raise and a behaviour that refuses what it could not
    parse (unchanged when it has no deserializer: raw bytes in, nothing to parse)."""
    if handler.request_deserializer is None:
        return handler
    parse, serialize = _safe(handler.request_deserializer), handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(endpoint, handler.unary_unary), parse, serialize)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(_unary_stream(endpoint, handler.unary_stream), parse, serialize)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_stream_unary(endpoint, handler.stream_unary), parse, serialize)
    return grpc.stream_stream_rpc_method_handler(_stream_stream(endpoint, handler.stream_stream), parse, serialize)


class MalformedRequestInterceptor(grpc.aio.ServerInterceptor):
    """Every method of the server refuses a message it cannot parse with INVALID_ARGUMENT `bad_request`. A method's
    guarded handler is made once (its handler is the same object on every call)."""

    def __init__(self) -> None:
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        made = self._guarded.get(method)
        if made is None or made[0] is not handler:
            made = self._guarded[method] = (handler, guarded(handler, method.rsplit("/", 1)[-1][:64]))
        return made[1]
