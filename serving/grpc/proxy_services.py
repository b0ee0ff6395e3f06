"""Behind Ray Serve's gRPC proxy (`--ray-proxy`, KubeRay) a message that is not a valid protobuf of its method's
request type is refused INVALID_ARGUMENT with kind `bad_request`, as on the direct listeners (serving.grpc.malformed).

Ray's proxy parses each message with the request deserializer of the handlers its `grpc_servicer_functions` register
(it replaces their behaviour, not their parsing). With the generated functions a unary message that does not parse
failed in the gRPC library (UNKNOWN "Unexpected <class '...DecodeError'>", no kind), and a stream's ended the stream
as if the client had closed it: status OK, the messages after it silently dropped. The functions here, named in
`serve_config.yaml` and the KubeRay manifest, register the same services from their descriptors with a deserializer
that returns a `MalformedRequest` instead of raising; it travels to the Ingress replica with the call, and
the Ingress's methods refuse it there (serving.grpc.malformed): a unary call before its method runs, a stream at the
malformed message, after the answers to the messages before it. This module is what the proxy imports: grpc,
protobuf and the generated descriptors only (also for `StreamStatusError`, which the proxy unpickles).
"""

import logging
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2

from serving.grpc.parsing import safe_parser
from serving.grpc.stubs import load


def service_descriptor(module: Any, name: str) -> ServiceDescriptor:
    """The descriptor of service `name` of a generated module (as each module loads only its own protos: imgserve's
    `inference_pb2` and tritonclient's declare the same symbols and cannot share a process's descriptor pool)."""
    return module.DESCRIPTOR.services_by_name[name]


def grpc_endpoints() -> list[str]:
    """The RPC names of imgserve's two services: the `endpoint` label of their requests and errors."""
    services = (
        service_descriptor(load("image_service_pb2"), "ImageService"),
        service_descriptor(load("inference_pb2"), "GRPCInferenceService"),
    )
    return [method.name for service in services for method in service.methods]


_HANDLER_KINDS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _not_called(*_: Any) -> None:
    raise NotImplementedError("Ray's proxy replaces this behaviour with its call to the Ingress")


def _method_handler(method: MethodDescriptor) -> grpc.RpcMethodHandler:
    request, response = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
    make = _HANDLER_KINDS[method.client_streaming, method.server_streaming]
    return make(
        _not_called,
        request_deserializer=safe_parser(request.FromString, apart=False),
        response_serializer=response.SerializeToString,
    )


def _register(service: ServiceDescriptor, server: Any) -> None:
    """What a generated `add_*Servicer_to_server` does, with the safe deserializer (the servicer is not needed:
    the proxy calls the Ingress's methods of the same names). Called in the proxy's process as it starts."""
    quiet_stream_statuses()
    handlers = {method.name: _method_handler(method) for method in service.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)


def add_GRPCInferenceServiceServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802 - as generated
    _register(service_descriptor(load("inference_pb2"), "GRPCInferenceService"), server)


def add_ImageServiceServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802
    _register(service_descriptor(load("image_service_pb2"), "ImageService"), server)


def add_HealthServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802
    _register(service_descriptor(health_pb2, "Health"), server)


class StreamStatusError(Exception):
    """Raised at the end of a stream behind Ray's proxy whose method set an error status (serving.grpc.malformed):
    Ray Serve carries that status, code and details, to the client. An expected end, not a fault of the server."""


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    """`exc` and what it wraps: Python's chain, Ray's task error `cause`, Serve's `original_exception`."""
    seen: set[int] = set()
    pending = [exc]
    while pending and len(seen) < 16:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for name in ("__cause__", "__context__", "cause", "original_exception"):
            linked = getattr(current, name, None)
            if isinstance(linked, BaseException):
                pending.append(linked)


class _QuietStreamStatus(logging.Filter):
    """Ray Serve logs a stream ended by `StreamStatusError` as a failed request with two tracebacks, in the replica
    and in the proxy: the line stays (with its status code), the tracebacks go (a client refused for its key, or
    sending bytes that do not parse, must not be able to flood the logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and any(isinstance(e, StreamStatusError) for e in _causes(record.exc_info[1])):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_stream_statuses() -> None:
    """Install `_QuietStreamStatus` on Ray Serve's logger of this process (once)."""
    serve_logger = logging.getLogger("ray.serve")
    if not any(isinstance(f, _QuietStreamStatus) for f in serve_logger.filters):
        serve_logger.addFilter(_QuietStreamStatus())
