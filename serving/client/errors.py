"""`ImgServeError`, one exception for both transports, and the HTTP status -> gRPC code mapping.

`code` is always a gRPC status code name so callers can branch on one vocabulary. HTTP statuses map to
the code the server itself gives the same error over gRPC (serving/errors.py): 413 too_large is
RESOURCE_EXHAUSTED on both edges, as is 503 overloaded; other 503s (model_unavailable, a proxy with
no replica) are UNAVAILABLE. `status` keeps the exact HTTP status.

Authentication failures are subclasses, the same on both edges (`make_error` picks the class):

- `AuthenticationError`: no key, or one the server does not accept (HTTP 401, gRPC UNAUTHENTICATED).
- `PermissionDeniedError`: a valid key whose role may not do this (HTTP 403, gRPC PERMISSION_DENIED).
- `RateLimitedError`: the key's rate limit or quota (HTTP 429, gRPC RESOURCE_EXHAUSTED with kind
  `rate_limited` or `quota_exceeded`); `retry_after` is the server's `Retry-After` in seconds (None when it
  sent none). Not retried by the SDK: waiting is the caller's decision. RESOURCE_EXHAUSTED for other reasons
  (413 too_large, 503 overloaded) stays a plain `ImgServeError`.
"""

import email.utils
import math
import time
from typing import Any

import httpx

from serving.client.auth import API_KEY_ENV, redact

HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "FAILED_PRECONDITION",  # a conflict with the state (a served version, a finished job): the server's code
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
OVERLOADED = "overloaded"
RATE_LIMITED = "rate_limited"
RATE_LIMIT_KINDS = (RATE_LIMITED, "quota_exceeded")  # RESOURCE_EXHAUSTED kinds that mean "this key, wait"


class ImgServeError(Exception):
    """A failed call: `code` (gRPC code name), `kind` (server's machine-readable kind), `message`, `status`.

    `status` is the HTTP status over HTTP and None over gRPC or when no response arrived at all. `retry_after`:
    seconds the server asked to wait (its `Retry-After`: rate limits, a replica being replaced), None when it did
    not say.
    """

    def __init__(self, code: str, kind: str, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(f"{code} ({kind}): {message}")
        self.code = code
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled and copied by its constructor's arguments and its attributes (later ones, `add_note`'s notes,
        included): `Exception`'s own reduce passes `args`, the one formatted message, which `__init__` does not take,
        so a `ProcessPoolExecutor` worker's error broke the pool and `copy.deepcopy` of a failed result raised."""
        return type(self), (self.code, self.kind, self.message, self.status, self.retry_after), self.__dict__

    @property
    def retryable(self) -> bool:
        """Only UNAVAILABLE is retried: the server or model may come back; nothing else changes on a retry."""
        return self.code == "UNAVAILABLE"


class AuthenticationError(ImgServeError):
    """No API key, or one the server does not accept (HTTP 401 / gRPC UNAUTHENTICATED)."""


class PermissionDeniedError(ImgServeError):
    """The key is valid but its role may not do this (HTTP 403 / gRPC PERMISSION_DENIED)."""


class RateLimitedError(ImgServeError):
    """The key's rate limit or quota (HTTP 429 / gRPC RESOURCE_EXHAUSTED, kind rate_limited)."""


# Refusals that end a stream on both transports: the caller's key or role, not an image (gRPC's AnalyzeStream ends
# with the status; over HTTP, one call per image, the 401/403 is raised). A rate limit or quota (`RateLimitedError`)
# is not one of them: it is the item's error and the stream goes on.
CALLER_REFUSALS = (AuthenticationError, PermissionDeniedError)


def make_error(
    code: str, kind: str, message: str, status: int | None = None, retry_after: float | None = None
) -> ImgServeError:
    """The `ImgServeError` (sub)class for a failure, whichever edge it came from (see the module doc)."""
    if code == "UNAUTHENTICATED":
        return AuthenticationError(code, kind, message, status)
    if code == "PERMISSION_DENIED":
        return PermissionDeniedError(code, kind, message, status)
    if status == 429 or (code == "RESOURCE_EXHAUSTED" and kind in RATE_LIMIT_KINDS):
        return RateLimitedError(code, kind, message, status, retry_after)
    return ImgServeError(code, kind, message, status, retry_after)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` in seconds: delta-seconds (`"3"`, `"0.5"`) or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def http_code(status: int, kind: str) -> str:
    """The gRPC code name for an HTTP error status (and the server's error kind)."""
    if status == 503 and kind == OVERLOADED:
        return "RESOURCE_EXHAUSTED"
    if status in HTTP_CODES:
        return HTTP_CODES[status]
    return "INVALID_ARGUMENT" if 400 <= status < 500 else "UNKNOWN"


def from_http_response(response: httpx.Response, api_key: str | None = None) -> ImgServeError:
    """An error response as `ImgServeError` (or the subclass for 401/403/429); bodies that are not our JSON (a
    proxy's page) still map by status. `api_key` is taken out of the message should the body quote it."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        kind, message = str(body.get("kind") or f"http_{response.status_code}"), str(body["error"])
    else:
        kind, message = f"http_{response.status_code}", response.text.strip()[:300] or response.reason_phrase
    code, status = http_code(response.status_code, kind), response.status_code
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return make_error(code, kind, redact(message, api_key), status, retry_after)


def from_http_transport_error(exc: httpx.TransportError) -> ImgServeError:
    """No response: a timeout is DEADLINE_EXCEEDED (not retried), anything else (refused, reset) UNAVAILABLE."""
    if isinstance(exc, httpx.TimeoutException):
        return ImgServeError("DEADLINE_EXCEEDED", "timeout", f"no answer in time: {exc or type(exc).__name__}")
    return ImgServeError("UNAVAILABLE", "connection", f"{type(exc).__name__}: {exc}")


def error_line(exc: BaseException, key_sent: bool) -> str:
    """A CLI's one-line message for a failed call, with what to do about a refused or missing key."""
    text = " ".join(str(exc).split())
    if isinstance(exc, AuthenticationError) and not key_sent:
        text += f" (no API key was sent: set {API_KEY_ENV}, or pass --api-key)"
    elif isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        text += f" (retry after {exc.retry_after:g} s)"
    return text
