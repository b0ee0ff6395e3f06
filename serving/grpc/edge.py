"""What every gRPC method shares: the security gate, status codes from exceptions, metrics."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from serving.access_log import echoed_request_id, log_request, start_request
from serving.admission import REPLICA_LIMIT, UNLIMITED_GRPC_METHODS
from serving.errors import ErrorInfo, classify_error, internal_detail, retry_after_value
from serving.metrics import ERRORS, INFLIGHT, REQUEST_LATENCY, REQUESTS, model_label
from serving.security.authenticator import MAX_AUTHORIZATION
from serving.security.gate import replica_gate
from serving.security.principal import SERVER_WIDE_GRPC_METHODS, grpc_role

logger = logging.getLogger("imgserve.grpc")

T = TypeVar("T")
ERROR_KIND_METADATA = "imgserve-error-kind"
# A stream's message refused at admission for these is refused for its caller (the key unknown, revoked or expired;
# its role): no later message could pass, so the stream ends with the status (`CallerRefusedError`), as it would
# have been refused when it opened and as the SDK's stream over HTTP ends on a 401/403. A rate limit or quota
# (RESOURCE_EXHAUSTED) stays the message's own error: the next one may pass.
CALLER_REFUSAL_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


class CallerRefusedError(Exception):
    """A stream's message refused at admission for its caller (`CALLER_REFUSAL_CODES`): the stream ends with `error`
    as its status (`end_with_error`)."""

    def __init__(self, error: ErrorInfo):
        super().__init__(error.message)
        self.error = error


def status_code(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


DETAILS_BYTES = 1500  # percent-encoded in the grpc-message trailer (non-ASCII x3): well inside the 8 KiB soft limit


def status_details(message: str) -> str:
    """A status message that always gets through: past the peer's metadata limit a status is replaced by
    RESOURCE_EXHAUSTED "Stream removed", its code and kind lost (`classify_error` bounds characters; this bytes)."""
    encoded = message.encode()
    if len(encoded) <= DETAILS_BYTES:
        return message
    return encoded[: DETAILS_BYTES - 3].decode(errors="ignore") + "\u2026"


def invocation_values(context: Any, name: str, limit: int = 128) -> list[str]:
    """Every value of a request metadata key, in order (each at most `limit` characters)."""
    metadata = getattr(context, "invocation_metadata", None)
    entries = (metadata() if callable(metadata) else None) or ()
    return [value[:limit] for key, value in entries if key == name and isinstance(value, str)]


def invocation_value(context: Any, name: str, limit: int = 128) -> str | None:
    """A request metadata value (the first one, at most `limit` characters), or None."""
    values = invocation_values(context, name, limit)
    return values[0] or None if values else None


def client_request_id(context: Any) -> str | None:
    """The client's `request_id` metadata (behind Ray's proxy, Ray's own id wins: `start_request`); None (a new id
    is made) for one that is not printable ASCII: gRPC core takes such a value in (from a client other than
    grpcio, which refuses to send it) but not out, so echoing it in the trailing metadata turned the answer, the
    work done, or a refusal's own status into INTERNAL "Invalid metadata"."""
    value = invocation_value(context, "request_id")
    return value if value is not None and all(" " <= c <= "~" for c in value) else None


def peer_address(context: Any) -> str | None:
    """`ipv4:1.2.3.4:5678` -> `1.2.3.4` (None when unknown)."""
    peer = getattr(context, "peer", None)
    text = peer() if callable(peer) else None
    if not text or ":" not in text:
        return None
    address = text.split(":", 1)[1]
    return address.rsplit(":", 1)[0].strip("[]") if ":" in address else address


@dataclass(frozen=True)
class CallFacts:
    """A streaming call's peer and request metadata, read once when the stream opens, answering the two reads of
    the call's context that `admit`, `attempt` and `client_request_id` make. grpc.aio frees the call when the RPC
    ends (the client cancels, its deadline passes) while the stream's messages can still be in flight: one that then
    asked the live context for its peer crashed the whole replica (SIGSEGV in `grpc_call_get_peer`)."""

    address: str | None
    metadata: tuple[tuple[str, Any], ...]

    def peer(self) -> str | None:
        return self.address

    def invocation_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self.metadata


def call_facts(context: Any) -> CallFacts | None:
    """`context`'s `CallFacts`, for the messages of a stream to read instead of it (None for None)."""
    if context is None:
        return None
    peer, metadata = getattr(context, "peer", None), getattr(context, "invocation_metadata", None)
    entries = (metadata() if callable(metadata) else None) or ()
    return CallFacts(peer() if callable(peer) else None, tuple(entries))


async def admit(endpoint: str, context: Any, rate: bool = True) -> None:
    """The security gate for an RPC (serving.security.gate): raises 401/403/429 errors, mapped like any other."""
    await replica_gate().admit(
        invocation_values(context, "authorization", MAX_AUTHORIZATION + 1),
        peer_address(context),
        grpc_role(endpoint),
        endpoint,
        rate,
        server_wide=endpoint in SERVER_WIDE_GRPC_METHODS,
    )


async def attempt(
    endpoint: str,
    model: str,
    call: Callable[[], Awaitable[T]],
    request_id: str | None = None,
    context: Any = None,
    stream: bool = False,
) -> tuple[T | None, ErrorInfo | None]:
    """Pass the gate (a stream's every message too: its key is checked again, so a revoked key stops within the
    key cache's seconds, and each message is a request of the rate limit), run `call`, count and time it; a
    failure comes back as its `ErrorInfo` instead of raising, except a `stream` message's admission refused for its
    caller, which raises `CallerRefusedError` (counted and audited alike) to end the stream."""
    start = time.perf_counter()
    stages = start_request(request_id)
    code = "OK"
    model = model_label(model)
    INFLIGHT.labels("grpc").inc()
    admitted = False
    try:
        await admit(endpoint, context)
        admitted = True
        with nullcontext() if endpoint in UNLIMITED_GRPC_METHODS else REPLICA_LIMIT.admit():
            return await call(), None
    except asyncio.CancelledError:  # the client cancelled or its deadline passed: counted as such, not as OK
        code = "CANCELLED"
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a status, the replica keeps serving
        info = classify_error(exc)
        code = info.grpc_code
        ERRORS.labels(endpoint, info.kind).inc()
        replica_gate().audit_refusal(exc, peer_address(context), endpoint)  # a service's 403, as the gate's
        if info.kind == "internal":
            logger.error("internal error on %s: %s", endpoint, internal_detail(exc), exc_info=exc)
        if stream and not admitted and info.grpc_code in CALLER_REFUSAL_CODES:
            raise CallerRefusedError(info) from exc
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
    result, error = await attempt(endpoint, model, call, client_request_id(context), context)
    trailing = [("request_id", echo)] if (echo := echoed_request_id()) and context is not None else []
    if error is None:
        if trailing:
            context.set_trailing_metadata(trailing)
        return result  # type: ignore[return-value]
    end_with_error(context, error, trailing)
    return empty()


def end_with_error(context: Any, error: ErrorInfo, trailing: list[tuple[str, str]] | None = None) -> None:
    """Set `error` as the call's status on `context` (None: none to set): code, details, the kind (the HTTP body's
    "kind") and a rate limit's retry-after in the trailing metadata, with `trailing`."""
    if context is None:
        return
    context.set_code(status_code(error.grpc_code))
    context.set_details(status_details(error.message))
    extra = list(trailing or ())
    if error.retry_after_s is not None:
        extra.append(("retry-after", retry_after_value(error.retry_after_s)))
    context.set_trailing_metadata([(ERROR_KIND_METADATA, error.kind), *extra])


async def open_stream(endpoint: str, context: Any) -> bool:
    """Check a streaming RPC's key and role when it opens (its messages are admitted one by one: `attempt`); on
    refusal set the status on `context` and return False."""
    try:
        await admit(endpoint, context, rate=False)
    except Exception as exc:  # noqa: BLE001 - a refusal becomes the stream's status
        info = classify_error(exc)
        ERRORS.labels(endpoint, info.kind).inc()
        REQUESTS.labels(endpoint, "grpc", "", info.grpc_code).inc()
        end_with_error(context, info)
        return False
    return True
