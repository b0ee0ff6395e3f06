"""The request id a client sends in `X-Request-Id` comes back as the bytes it sent, whatever they are: ASGI gives
header values as bytes read as latin-1, and the echo wrote that text back as UTF-8, so a UTF-8 id `req-ünï` came
back double-encoded (`req-Ã¼nÃ¯`)."""

import asyncio
from typing import Any

import pytest

from serving.http.middleware import RequestMetricsMiddleware

pytestmark = pytest.mark.unit


async def _answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _echoed(request_id: bytes) -> bytes | None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"x-request-id", request_id)]}
    asyncio.run(RequestMetricsMiddleware(_answer)(scope, receive, send))
    return dict(sent[0]["headers"]).get(b"x-request-id")


@pytest.mark.parametrize("request_id", [b"t-1", "req-ünï".encode(), b"\xff\xfe-latin"])
def test_the_echoed_request_id_is_the_bytes_sent(request_id: bytes) -> None:
    assert _echoed(request_id) == request_id
