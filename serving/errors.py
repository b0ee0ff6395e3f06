"""Errors the service layer raises, and how each maps to HTTP and gRPC at the edges.

Exceptions raised inside other Ray replicas arrive wrapped (RayTaskError); `unwrap` recovers the
original so a corrupt image decoded in the decode stage still becomes a 400, not a 500.
"""

import errno
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pipelines.errors import ImageInputError
from serving.repository import UnknownModelError


class ServiceError(Exception):
    """Base for service-layer errors with a fixed HTTP status and gRPC code."""

    http_status = 500
    grpc_code = "INTERNAL"
    kind = "internal"


class InvalidTensorError(ServiceError, ValueError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    kind = "invalid_tensor"


class BadRequestError(ServiceError, ValueError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    kind = "bad_request"


class RequestTooLargeError(ServiceError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    kind = "too_large"


class RequestTimeoutError(ServiceError):
    http_status = 408
    grpc_code = "DEADLINE_EXCEEDED"
    kind = "timeout"


class ModelUnavailableError(ServiceError):
    http_status = 503
    grpc_code = "UNAVAILABLE"
    kind = "model_unavailable"


class OverloadedError(ServiceError):
    http_status = 503
    grpc_code = "RESOURCE_EXHAUSTED"
    kind = "overloaded"
    retry_after_s = 1.0  # Retry-After: shed load comes back soon


# An error message quotes client text (a model name, an option value): bounded, so a 20,000-character name cannot
# make the answer huge, nor push a gRPC status past the 8 KiB metadata limit, where the status itself is lost.
MAX_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class ErrorInfo:
    """What the edge needs to answer an error."""

    http_status: int
    grpc_code: str
    kind: str
    message: str
    retry_after_s: float | None = None  # rate limits and quotas: when to try again


def retry_after_value(seconds: float) -> str:
    """A `Retry-After` header (or gRPC trailing metadata) value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def unwrap(exc: BaseException) -> BaseException:
    """The original exception behind Ray's task-error wrappers."""
    seen = 0
    while seen < 5 and getattr(exc, "cause", None) is not None and isinstance(exc.cause, BaseException):  # type: ignore[attr-defined]
        exc = exc.cause  # type: ignore[attr-defined]
        seen += 1
    return exc


def classify_error(exc: BaseException) -> ErrorInfo:
    """Map any exception to status codes; unknown exceptions are internal errors (500 / INTERNAL) whose message is
    generic: exception text (Ray actor addresses, SQL, file paths) goes to the server log, never to the client, who
    gets the request id to quote instead. The message carries the exception's notes (which image of a list failed:
    "(image index 3)") and is at most `MAX_MESSAGE_CHARS` long, whatever client text it quotes."""
    original = unwrap(exc)
    info = _mapped(original)
    if info.kind == "internal":
        return info
    notes = dict.fromkeys([*getattr(exc, "__notes__", []), *getattr(original, "__notes__", [])])
    message = info.message + "".join(f" ({note})" for note in notes)
    return replace(info, message=bounded_message(message))


def _holds_nul(value: Any) -> bool:
    """Whether a statement's bound parameters (a mapping, a sequence of them, or one value) hold a str with a NUL."""
    return any("\x00" in text for text in strings_in(value))


def strings_in(value: Any, keys: bool = False) -> Iterator[str]:
    """Every str in `value` and the mappings, lists and tuples nested in it (mappings' keys too with `keys`), walked
    with a stack rather than recursion: as deep as json.loads nests, without Python's recursion limit."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            pending.extend(item.values())
            if keys:
                pending.extend(item.keys())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


def bounded_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` cut to `limit` characters, and sendable: a lone surrogate in client text it quotes (a JSON
    `"\\ud800"`) cannot be encoded as UTF-8, so a JSON body or gRPC status carrying it failed to be sent (a bare
    500); it is written as its escape instead."""
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message if len(message) <= limit else message[: limit - 1] + "\u2026"


def _mapped(original: BaseException) -> ErrorInfo:
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, RayServeException
    from sqlalchemy import exc as sa_exc

    from serving.access_log import current_request_id

    if isinstance(original, (ImageInputError, ServiceError)):
        retry = getattr(original, "retry_after_s", None)
        return ErrorInfo(original.http_status, original.grpc_code, original.kind, str(original), retry)
    if isinstance(original, UnknownModelError):
        return ErrorInfo(404, "NOT_FOUND", "unknown_model", str(original))
    if isinstance(original, BackPressureError):
        return ErrorInfo(503, "RESOURCE_EXHAUSTED", "overloaded", f"server is overloaded, retry later: {original}")
    if isinstance(original, RayActorError) or (  # a stage replica died (killed, OOM) or restarts: Serve replaces it
        # ... or the replica an argument came from did: a decode result passed by reference to a model deployment
        # whose Decoder died is Ray Serve's "upstream actor died" RayServeException, the ActorDiedError its cause
        isinstance(original, RayServeException) and isinstance(original.__cause__, RayActorError)
    ):
        message = "a serving replica stopped while handling the request; retry"
        return ErrorInfo(503, "UNAVAILABLE", "replica_unavailable", message, 1.0)
    if isinstance(original, OSError) and original.errno in (errno.ENOSPC, errno.EDQUOT):
        return ErrorInfo(507, "RESOURCE_EXHAUSTED", "storage_full", "the server's storage is full; retry later")
    if isinstance(original, (sa_exc.OperationalError, sa_exc.InterfaceError)):  # the job/key store is down
        return ErrorInfo(
            503, "UNAVAILABLE", "store_unavailable", "the server's database is unavailable; retry later", 5.0
        )
    if isinstance(original, sa_exc.DataError) and _holds_nul(original.params):
        # PostgreSQL's text holds no NUL: a job id, filter or name with one (`/v1/jobs/ab%00cd`) cannot be stored or
        # looked up there (SQLite can: there it is simply not found). The client's value, not the server, is at fault.
        message = "a value in the request holds a NUL byte (\\x00), which the server's database cannot hold"
        return ErrorInfo(400, "INVALID_ARGUMENT", "bad_request", message)
    if isinstance(original, RecursionError):  # only client JSON nests that deep (e.g. 200,000 '[')
        return ErrorInfo(400, "INVALID_ARGUMENT", "bad_request", "request is nested too deeply to parse")
    message = f"internal error (request id {current_request_id() or 'unknown'}); details are in the server log"
    return ErrorInfo(500, "INTERNAL", "internal", message)


def internal_detail(exc: BaseException) -> str:
    """What an internal error was, for the server log only (`classify_error` does not tell the client)."""
    original = unwrap(exc)
    return f"{type(original).__name__}: {original}"
