"""Messages that are not a valid protobuf of the method's request type (truncated, invalid UTF-8 in a string field,
wrong wire types) are refused INVALID_ARGUMENT with kind `bad_request`, as a malformed JSON body is a 400 over HTTP,
on the Ingress's direct listeners and behind Ray Serve's proxy (`--ray-proxy`, KubeRay) alike.

Left to the gRPC library such a message is UNKNOWN "Unexpected <class '...DecodeError'>: ...", with no
`imgserve-error-kind`, uncounted, and a traceback in the log for every message (a cheap way to flood it); behind
Ray's proxy a stream's malformed message even ended the stream with OK, the messages after it dropped. So every
listener parses with a deserializer that returns a `MalformedRequest` instead of raising (serving.grpc.parsing): the
direct listeners swap it in with `SafeParsingInterceptor` (serving.deployments.direct_ingress), Ray's proxy gets it
from the servicer functions of serving.grpc.proxy_services. The methods refuse it themselves (`guarded_methods`, on
the classes that define them): a unary call before its body runs, a stream at the malformed message, after the
answers to the messages before it.

Behind Ray's proxy a stream's status needs one step more: the proxy takes a stream's code, details and trailing
metadata from the context sent with each answer, so a stream that ends with an error after its last answer (refused
when it opened, a malformed message, its key revoked) reached the client as OK, most often with no answers at all.
There such a stream ends by raising `StreamStatusError`, which Ray Serve turns into the status the method set (code
and details; the `imgserve-error-kind` trailing metadata does not travel that way). The proxy and the replica log such
a call as failed, in one line each (`quiet_stream_statuses` keeps the tracebacks out).
"""

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from ray.serve.grpc_util import RayServegRPCContext

from serving.errors import BadRequestError, ErrorInfo, classify_error
from serving.grpc.edge import answer, end_with_error, open_stream, status_details
from serving.grpc.parsing import MalformedRequest, safe_parser
from serving.grpc.proxy_services import StreamStatusError
from serving.metrics import ERRORS, REQUESTS

T = TypeVar("T")


def refusal(endpoint: str, request: MalformedRequest) -> ErrorInfo:
    """The error a malformed message of `endpoint` is refused with (a `BadRequestError`, mapped as every other),
    counted in the metrics as it is made."""
    error = classify_error(BadRequestError(f"the message is not a valid {endpoint} request: {request.reason}"))
    ERRORS.labels(endpoint, error.kind).inc()
    REQUESTS.labels(endpoint, "grpc", "", error.grpc_code).inc()
    return replace(error, message=status_details(error.message))


class SafeParsingInterceptor(grpc.aio.ServerInterceptor):
    """Every method of a direct listener parses with `safe_parser` (a message that parses comes with its bytes
    fields held once: serving.grpc.bytes_apart). A method's handler is remade once (it is the same object on every
    call)."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:  # raw bytes in: nothing to parse
            return handler
        method = handler_call_details.method
        made = self._made.get(method)
        if made is None or made[0] is not handler:
            safe = handler._replace(request_deserializer=safe_parser(handler.request_deserializer))
            made = self._made[method] = (handler, safe)
        return made[1]


def _end_stream(grpc_context: Any) -> None:
    if isinstance(grpc_context, RayServegRPCContext) and grpc_context.code() not in (None, grpc.StatusCode.OK):
        raise StreamStatusError(grpc_context.details())


class _MalformedInStream(Exception):  # noqa: N818 - not an error of the server: the stream's end
    def __init__(self, request: MalformedRequest):
        super().__init__(request.reason)
        self.request = request


async def _until_malformed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, MalformedRequest):
            raise _MalformedInStream(request)
        yield request


def _guarded(method: MethodDescriptor, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    name, empty = method.name, GetMessageClass(method.output_type)
    if method.client_streaming and method.server_streaming:

        async def stream_stream(self: Any, requests: AsyncIterator[Any], grpc_context: Any = None) -> Any:
            try:
                async for response in behaviour(self, _until_malformed(requests), grpc_context):
                    yield response
            except _MalformedInStream as stop:  # the answers before it are sent; the status says why it ended
                end_with_error(grpc_context, refusal(name, stop.request))
            _end_stream(grpc_context)

        return functools.wraps(behaviour)(stream_stream)
    if method.client_streaming:
        raise TypeError(f"{name}: a client-streaming method with one answer has no guard here")
    if method.server_streaming:

        async def unary_stream(self: Any, request: Any, grpc_context: Any = None) -> Any:
            if isinstance(request, MalformedRequest):
                if await open_stream(name, grpc_context):  # the caller's key first, as for any other message
                    end_with_error(grpc_context, refusal(name, request))
            else:
                async for response in behaviour(self, request, grpc_context):
                    yield response
            _end_stream(grpc_context)

        return functools.wraps(behaviour)(unary_stream)

    async def unary_unary(self: Any, request: Any, grpc_context: Any = None) -> Any:
        if isinstance(request, MalformedRequest):
            malformed = request

            async def refused() -> Any:
                raise BadRequestError(f"the message is not a valid {name} request: {malformed.reason}")

            # through the gate as any call: a caller without a key learns nothing of the message's parsing (it
            # was INVALID_ARGUMENT before UNAUTHENTICATED; HTTP answers 401 first), counted as any refusal
            return await answer(name, "", grpc_context, refused, empty)
        return await behaviour(self, request, grpc_context)

    return functools.wraps(behaviour)(unary_unary)


def guarded_methods(*services: ServiceDescriptor) -> Callable[[type[T]], type[T]]:
    """A class decorator: each RPC method of `services` the class defines (named as the RPC) guarded as the module
    says."""

    def guard(cls: type[T]) -> type[T]:
        for service in services:
            for method in service.methods:
                behaviour = cls.__dict__.get(method.name)
                if behaviour is not None:
                    setattr(cls, method.name, _guarded(method, behaviour))
        return cls

    return guard
