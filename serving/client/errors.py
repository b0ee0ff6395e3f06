"""`ImgServeError`, one exception for both transports, and the HTTP status -> gRPC code mapping.

`code` is always a gRPC status code name so callers can branch on one vocabulary. HTTP statuses map to
the code the server itself gives the same error over gRPC (serving/errors.py): 413 too_large is
RESOURCE_EXHAUSTED on both edges, as is 503 overloaded; other 503s (model_unavailable, a proxy with
no replica) are UNAVAILABLE. `status` keeps the exact HTTP status.
"""

import httpx

HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
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


class ImgServeError(Exception):
    """A failed call: `code` (gRPC code name), `kind` (server's machine-readable kind), `message`, `status`.

    `status` is the HTTP status over HTTP and None over gRPC or when no response arrived at all.
    """

    def __init__(self, code: str, kind: str, message: str, status: int | None = None):
        super().__init__(f"{code} ({kind}): {message}")
        self.code = code
        self.kind = kind
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        """Only UNAVAILABLE is retried: the server or model may come back; nothing else changes on a retry."""
        return self.code == "UNAVAILABLE"


def http_code(status: int, kind: str) -> str:
    """The gRPC code name for an HTTP error status (and the server's error kind)."""
    if status == 503 and kind == OVERLOADED:
        return "RESOURCE_EXHAUSTED"
    if status in HTTP_CODES:
        return HTTP_CODES[status]
    return "INVALID_ARGUMENT" if 400 <= status < 500 else "UNKNOWN"


def from_http_response(response: httpx.Response) -> ImgServeError:
    """An error response as `ImgServeError`; bodies that are not our JSON (a proxy's page) still map by status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        kind, message = str(body.get("kind") or f"http_{response.status_code}"), str(body["error"])
    else:
        kind, message = f"http_{response.status_code}", response.text.strip()[:300] or response.reason_phrase
    return ImgServeError(http_code(response.status_code, kind), kind, message, response.status_code)


def from_http_transport_error(exc: httpx.TransportError) -> ImgServeError:
    """No response: a timeout is DEADLINE_EXCEEDED (not retried), anything else (refused, reset) UNAVAILABLE."""
    if isinstance(exc, httpx.TimeoutException):
        return ImgServeError("DEADLINE_EXCEEDED", "timeout", f"no answer in time: {exc or type(exc).__name__}")
    return ImgServeError("UNAVAILABLE", "connection", f"{type(exc).__name__}: {exc}")
