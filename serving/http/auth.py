"""ASGI middleware: every HTTP request and WebSocket connection passes the security gate (serving.security.gate)
before any work.

Open: the liveness/readiness probes. A request with more than one `Authorization` header is refused (401). A refused
request gets imgserve's JSON error body: 401 (with
`WWW-Authenticate: Bearer`), 403, or 429 with `Retry-After`; a refused WebSocket handshake is closed with code 1008
(policy violation; the server answers the upgrade with 403). The admitted caller is then
`serving.security.gate.current_principal()` for the rest of the request. Other scopes (lifespan) carry no request.
"""

from typing import Any

from serving.errors import retry_after_value
from serving.http.middleware import Receive, Scope, Send, request_header_values, route_template, send_json_error
from serving.metrics import ERRORS
from serving.security.authenticator import MAX_AUTHORIZATION
from serving.security.errors import PermissionDeniedError, RateLimitedError, UnauthenticatedError
from serving.security.gate import SecurityGate
from serving.security.principal import http_role, is_server_wide

WS_POLICY_VIOLATION = 1008  # RFC 6455 close code for a refused WebSocket


def client_address(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None


def refusal_headers(error: Exception) -> tuple[tuple[bytes, bytes], ...]:
    if isinstance(error, RateLimitedError):
        return ((b"retry-after", retry_after_value(error.retry_after_s).encode()),)
    if isinstance(error, UnauthenticatedError):
        return ((b"www-authenticate", b'Bearer realm="imgserve"'),)
    return ()


class AuthMiddleware:
    def __init__(self, app: Any, gate: SecurityGate):
        self.app, self.gate = app, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # a WebSocket route, added one day, must not skip the gate
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        websocket = scope["type"] == "websocket"
        role = http_role("GET" if websocket else scope.get("method", "GET"), path)  # a handshake is a GET
        try:
            await self.gate.admit(
                request_header_values(scope, b"authorization", limit=MAX_AUTHORIZATION + 1),
                client_address(scope),
                role,
                path[:128],
                server_wide=is_server_wide(path),
            )
        except (UnauthenticatedError, PermissionDeniedError, RateLimitedError) as error:
            ERRORS.labels(route_template(scope), error.kind).inc()  # every error, as the routes count theirs
            if websocket:  # closed before it is accepted: the server refuses the upgrade (403)
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": error.kind})
            else:
                await send_json_error(send, error.http_status, str(error), error.kind, refusal_headers(error))
            return
        await self.app(scope, receive, send)  # the caller is the gate's context variable from here on
