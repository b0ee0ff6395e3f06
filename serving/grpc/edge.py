"""What every gRPC method shares: status codes from exceptions, metrics."""

import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from typing import Any, TypeVar

import grpc

from serving.access_log import echoed_request_id, log_request, start_request
from serving.admission import REPLICA_LIMIT, UNLIMITED_GRPC_METHODS
from serving.errors import ErrorInfo, classify_error
from serving.metrics import ERRORS, INFLIGHT, REQUEST_LATENCY, REQUESTS

T = TypeVar("T")
ERROR_KIND_METADATA = "imgserve-error-kind"


def status_code(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


def client_request_id(context: Any) -> str | None:
    """The client's `request_id` metadata (behind Ray's proxy, Ray's own id wins: `start_request`)."""
    metadata = getattr(context, "invocation_metadata", None)
    for key, value in (metadata() if callable(metadata) else None) or ():
        if key == "request_id" and isinstance(value, str):
            return value[:128] or None
    return None


async def attempt(
    endpoint: str, model: str, call: Callable[[], Awaitable[T]], request_id: str | None = None
) -> tuple[T | None, ErrorInfo | None]:
    """Run `call`, counting and timing it; a failure comes back as its `ErrorInfo` instead of raising."""
    start = time.perf_counter()
    stages = start_request(request_id)
    code = "OK"
    INFLIGHT.labels("grpc").inc()
    try:
        with nullcontext() if endpoint in UNLIMITED_GRPC_METHODS else REPLICA_LIMIT.admit():
            return await call(), None
    except Exception as exc:  # noqa: BLE001 - every failure becomes a status, the replica keeps serving
        info = classify_error(exc)
        code = info.grpc_code
        ERRORS.labels(endpoint, info.kind).inc()
        return None, info
    finally:
        INFLIGHT.labels("grpc").dec()
        latency = time.perf_counter() - start
        REQUESTS.labels(endpoint, "grpc", model, code).inc()
        REQUEST_LATENCY.labels(endpoint, "grpc", model).observe(latency)
        log_request("grpc", endpoint, model, code, latency, stages)


async def answer(
    endpoint: str, model: str, context: Any, call: Callable[[], Awaitable[T]], empty: Callable[[], T]
) -> T:
    """A unary RPC: on failure set the mapped status code and details on `context` and return `empty()`. On the
    direct listeners the request id goes back in the trailing metadata (Ray's proxy does that on its path)."""
    result, error = await attempt(endpoint, model, call, client_request_id(context))
    trailing = [("request_id", echo)] if (echo := echoed_request_id()) and context is not None else []
    if error is None:
        if trailing:
            context.set_trailing_metadata(trailing)
        return result  # type: ignore[return-value]
    if context is not None:
        context.set_code(status_code(error.grpc_code))
        context.set_details(error.message)
        context.set_trailing_metadata([(ERROR_KIND_METADATA, error.kind), *trailing])  # the HTTP body's "kind"
    return empty()
