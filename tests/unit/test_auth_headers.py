"""Credentials a request carries twice, and WebSocket upgrades on the direct listener (a docs walkthrough, items 7
and 8). Two `Authorization` headers (or two gRPC `authorization` metadata entries) were accepted silently, the first
winning even when the second was garbage: now a 401 naming the header. An upgrade request got uvicorn's plain-text
400 "Invalid HTTP request received." (the header-timeout protocol failed on it) instead of the 403 that
docs/SECURITY.md describes. Raw ASGI calls and a real uvicorn server on a local port; no Ray, no imgserve app."""

import asyncio
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn

from serving.http.auth import AuthMiddleware
from serving.http.header_timeout import header_timeout_protocol
from serving.jobs.database import create_store_engine, migrate
from serving.security.errors import UnauthenticatedError
from serving.security.gate import SecurityGate, set_replica_gate
from serving.security.keys import KeyStore
from serving.security.settings import SecuritySettings

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    store = create_store_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(store)
    return store


def _gate(engine: sa.Engine) -> SecurityGate:
    return SecurityGate("required", engine, SecuritySettings(auth="required", key_cache_s=0))


async def _inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app behind the gate: 200 for HTTP, accepts a WebSocket."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _http_get(app: Any, authorizations: list[str], path: str = "/v1/whoami") -> tuple[int, bytes]:
    """One GET `path` through `app` with these Authorization headers: (status, body)."""
    headers = [(b"authorization", value.encode()) for value in authorizations]
    scope = {"type": "http", "method": "GET", "path": path, "headers": headers, "client": ("10.1.2.3", 5)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_two_authorization_headers_are_refused_whichever_comes_first(engine: sa.Engine) -> None:
    keys = KeyStore(engine)
    _, viewer = keys.create("v", "viewer", "acme")
    _, analyst = keys.create("a", "analyst", "acme")
    app = AuthMiddleware(_inner, _gate(engine))
    assert _http_get(app, [f"Bearer {viewer}"])[0] == 200
    for pair in (
        [f"Bearer {viewer}", f"Bearer {analyst}"],
        [f"Bearer {analyst}", f"Bearer {viewer}"],
        [f"Bearer {viewer}", "Bearer garbage"],
        [f"Bearer {viewer}", f"Bearer {viewer}"],  # the same key twice is still two headers
        [f"Bearer {viewer}", ""],
    ):
        status, body = _http_get(app, pair)
        assert status == 401, (pair, body)
        assert b'"kind": "unauthenticated"' in body and b"2 Authorization headers" in body, body


def test_server_wide_figures_are_the_servers_own_operators_only(engine: sa.Engine) -> None:
    """/metrics, /v1/status and Triton's statistics name every tenant or count their traffic: a customer's operator
    or admin key (another tenant's) is refused them with the reason; the server's own (tenant default) reads them."""
    keys = KeyStore(engine)
    app = AuthMiddleware(_inner, _gate(engine))
    for path in ("/metrics", "/v1/status", "/v2/models/stats", "/v2/models/m/versions/1/stats"):
        for role, tenant, status in (
            ("analyst", "default", 403),
            ("operator", "acme", 403),
            ("admin", "acme", 403),
            ("operator", "default", 200),
            ("admin", "default", 200),
        ):
            _, key = keys.create(f"{role}-{tenant}-{path}", role, tenant)
            answer, body = _http_get(app, [f"Bearer {key}"], path)
            assert answer == status, (path, role, tenant, body)
            if tenant != "default":
                assert b"server-wide" in body and b"'acme'" in body, body
    _, customer = keys.create("customer-admin", "admin", "acme")
    assert _http_get(app, [f"Bearer {customer}"], "/v1/audit")[0] == 200  # its own tenant's entries: not server-wide


# a JWT of 50 KB (claims stuffed with groups): cut at 8192 characters it had one dot and read as "invalid API key"
HUGE_JWT = "eyJhbGciOiJSUzI1NiJ9." + "e" * 50_000 + ".c2ln"


def test_an_authorization_header_too_long_is_refused_as_too_long(engine: sa.Engine) -> None:
    app = AuthMiddleware(_inner, _gate(engine))
    status, body = _http_get(app, [f"Bearer {HUGE_JWT}"])
    assert status == 401 and b"longer than 8192 characters" in body, body
    _, key = KeyStore(engine).create("v", "viewer", "acme")
    assert _http_get(app, [f"Bearer {key}" + " " * (8192 - 7 - len(key))])[0] == 200  # 8192 exactly: read whole


def test_two_authorization_metadata_entries_are_refused_over_grpc(engine: sa.Engine) -> None:
    from serving.grpc.edge import admit

    _, viewer = KeyStore(engine).create("v", "viewer", "acme")
    set_replica_gate(_gate(engine))
    try:

        def context(*values: str) -> SimpleNamespace:
            metadata = tuple(("authorization", value) for value in values)
            return SimpleNamespace(invocation_metadata=lambda: metadata, peer=lambda: "ipv4:10.1.2.3:5")

        asyncio.run(admit("ModelReady", context(f"Bearer {viewer}")))  # one entry: admitted
        with pytest.raises(UnauthenticatedError, match="2 Authorization headers"):
            asyncio.run(admit("ModelReady", context(f"Bearer {viewer}", "Bearer garbage")))
        with pytest.raises(UnauthenticatedError, match="longer than 8192 characters"):
            asyncio.run(admit("ModelReady", context(f"Bearer {HUGE_JWT}")))
    finally:
        set_replica_gate(SecurityGate("off", None, SecuritySettings(auth="off")))


UPGRADE = (
    b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


def _upgrade_answer(app: Any, extra_headers: bytes = b"") -> bytes:
    """The head of the direct listener's answer (uvicorn with the header-timeout protocol) to a WebSocket upgrade."""

    async def main() -> bytes:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(app, lifespan="off", log_level="error", http=header_timeout_protocol(10.0))
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(UPGRADE + extra_headers + b"\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.close()
            return head
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)

    return asyncio.run(main())


def test_a_refused_websocket_upgrade_is_answered_403(engine: sa.Engine) -> None:
    head = _upgrade_answer(AuthMiddleware(_inner, _gate(engine)))
    assert head.startswith(b"HTTP/1.1 403"), head  # was 400 text/plain "Invalid HTTP request received."


def test_an_admitted_websocket_upgrade_reaches_the_app(engine: sa.Engine) -> None:
    _, admin = KeyStore(engine).create("a", "admin", "acme")
    head = _upgrade_answer(AuthMiddleware(_inner, _gate(engine)), f"Authorization: Bearer {admin}\r\n".encode())
    assert head.startswith(b"HTTP/1.1 101"), head
