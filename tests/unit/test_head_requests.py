"""HEAD on every GET route (`serving.http.head_requests`): the GET's status and headers without its body, on the
served app and on a real uvicorn server with the direct listener's protocol, where a stream's head is answered
without reading the stream and the connection serves the next request. Also: the scrape is not counted in flight."""

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from serving.config.app_args import AppArgs
from serving.http.app import create_http_app
from serving.http.head_requests import HeadRequestMiddleware
from serving.placement import build_service, compose
from tests.unit.test_header_timeout import _with_server
from tests.unit.tiny_models import tiny_settings

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    config = compose(AppArgs(placement="local", default_model="tiny"), tiny_settings(tmp_path_factory.mktemp("t")))
    with TestClient(create_http_app(build_service(config)), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("path", ["/v2/health/ready", "/v2/models/tiny", "/v1/models", "/v1/formats", "/metrics"])
def test_head_answers_as_the_get_without_a_body(http: TestClient, path: str) -> None:
    got = http.get(path)
    head = http.head(path)
    assert got.status_code == 200, got.text
    assert head.status_code == 200, f"HEAD {path}: {head.status_code} {head.text}"
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # the scrape's length changes between two reads
        assert head.headers["content-length"] == got.headers["content-length"]


def test_head_of_an_unknown_path_or_a_post_route_is_the_gets_refusal(http: TestClient) -> None:
    assert http.head("/v1/no-such-route").status_code == 404
    refused = http.head("/v1/classify")  # POST only: 405, with the methods it takes
    assert refused.status_code == 405
    assert "POST" in refused.headers["allow"]
    assert refused.content == b""


def test_the_scrape_is_not_counted_in_flight(http: TestClient) -> None:
    lines = [line for line in http.get("/metrics").text.splitlines() if line.startswith("imgserve_inflight_requests")]
    assert 'imgserve_inflight_requests{protocol="http"} 0.0' in lines, lines


def _stream_app(sent: list[int], closed: list[int]) -> FastAPI:
    """An app whose GET /stream never ends: `sent` grows per event, `closed` when its generator is closed."""

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                sent.append(1)
                yield b"event: progress\n\n"
                await asyncio.sleep(0.02)
        finally:
            closed.append(1)

    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        return StreamingResponse(endless(), media_type="text/event-stream")

    return app


def test_on_a_real_server_a_streams_head_is_answered_without_reading_the_stream() -> None:
    closed: list[int] = []
    sent: list[int] = []
    app = _stream_app(sent, closed)

    @app.get("/small")
    async def small() -> dict[str, str]:
        return {"a": "b"}

    def probe(port: int) -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            first = connection.recv(4096)
            connection.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")  # the same connection serves the next
            second = b""
            while not second.endswith(b'{"a":"b"}'):
                chunk = connection.recv(4096)
                assert chunk, f"closed after {second!r}"
                second += chunk
            return first, second

    first, second = _with_server(HeadRequestMiddleware(app), 5.0, probe)
    assert first.startswith(b"HTTP/1.1 200"), first
    assert b"text/event-stream" in first
    assert first.endswith(b"\r\n\r\n"), f"a body followed the head: {first!r}"
    assert b"event: progress" not in first
    assert second.startswith(b"HTTP/1.1 200"), second
    assert closed == [1], "the stream's generator was not closed"
    assert len(sent) <= 1, "the stream went on being read after its head"


def test_a_streams_head_ends_even_when_the_server_never_says_the_client_left() -> None:
    """Starlette's stream listens for the client leaving from before its head; a server whose `receive` stays
    waiting after the answer (uvicorn returns a disconnect then; another server need not) kept the stream running."""
    closed: list[int] = []
    app = _stream_app([], closed)
    sent: list[dict] = []
    first = True

    async def receive() -> dict:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never leaves, and the server never says so
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "HEAD",
        "scheme": "http",
        "path": "/stream",
        "raw_path": b"/stream",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"x")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def main() -> None:
        await asyncio.wait_for(HeadRequestMiddleware(app)(scope, receive, send), 5)

    asyncio.run(main())
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert closed == [1]
