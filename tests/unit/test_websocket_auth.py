"""The auth middleware and WebSocket scopes, called as a raw ASGI app (no server). No route takes a WebSocket today,
but the middleware passed every scope that is not "http" straight to the app: a WebSocket route added later would
have had no authentication, no role check and no rate limit (found by a review)."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from serving.http.auth import AuthMiddleware
from serving.jobs.database import create_store_engine, migrate
from serving.security.gate import SecurityGate, current_principal
from serving.security.keys import KeyStore
from serving.security.settings import SecuritySettings

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    store = create_store_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    migrate(store)
    return store


class RecordingApp:
    """The inner app: records the scopes that reached it and the caller the gate admitted for each."""

    def __init__(self) -> None:
        self.reached: list[tuple[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.reached.append((scope["type"], current_principal().tenant))
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})


async def _connect(app: Any, path: str, credentials: str | None) -> list[dict[str, Any]]:
    """One WebSocket handshake through `app`: the messages the app sent back."""
    headers = [(b"authorization", f"Bearer {credentials}".encode())] if credentials else []
    scope = {"type": "websocket", "path": path, "headers": headers, "client": ("10.1.2.3", 5555), "subprotocols": []}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _gate(engine: sa.Engine) -> SecurityGate:
    return SecurityGate("required", engine, SecuritySettings(auth="required", key_cache_s=0))


def test_a_websocket_without_credentials_is_closed_before_it_reaches_the_app(engine: sa.Engine) -> None:
    inner = RecordingApp()
    app = AuthMiddleware(inner, _gate(engine))
    sent = asyncio.run(_connect(app, "/v1/models", None))
    assert inner.reached == []
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "unauthenticated"}]


def test_a_websocket_needs_the_role_of_its_path(engine: sa.Engine) -> None:
    """A handshake is a GET: the route policy of a GET on its path applies (unknown paths need an admin)."""
    _, viewer = KeyStore(engine).create("v", "viewer", "acme")
    inner = RecordingApp()
    app = AuthMiddleware(inner, _gate(engine))
    sent = asyncio.run(_connect(app, "/v1/some/future/stream", viewer))
    assert inner.reached == []
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "permission_denied"}]


def test_an_admitted_websocket_reaches_the_app_as_its_caller(engine: sa.Engine) -> None:
    _, admin = KeyStore(engine).create("a", "admin", "acme")
    inner = RecordingApp()
    app = AuthMiddleware(inner, _gate(engine))
    sent = asyncio.run(_connect(app, "/v1/some/future/stream", admin))
    assert sent == [{"type": "websocket.accept"}]
    assert inner.reached == [("websocket", "acme")]  # unchecked, it was the anonymous caller's default tenant


def test_the_lifespan_scope_still_passes(engine: sa.Engine) -> None:
    inner = RecordingApp()
    app = AuthMiddleware(inner, _gate(engine))

    async def nothing() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def ignore(message: dict[str, Any]) -> None:
        return None

    asyncio.run(app({"type": "lifespan"}, nothing, ignore))
    assert [scope_type for scope_type, _ in inner.reached] == ["lifespan"]
