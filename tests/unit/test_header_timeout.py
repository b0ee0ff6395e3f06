"""The direct HTTP listener's deadline for request heads (#18, slowloris on headers), on a real uvicorn server
listening on a local port: a connection that sends nothing, or half a request head, is closed at the deadline; a
complete request on the same kind of connection is answered, and so is the next one on its keep-alive connection."""

import asyncio
import socket
import time

import pytest
import uvicorn

from serving.http.header_timeout import header_timeout_protocol

pytestmark = pytest.mark.unit


async def _app(scope: dict, receive: object, send: object) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


def _response(connection: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"ok"):
        chunk = connection.recv(200)
        if not chunk:
            break
        data += chunk
    return data


def _closed_within(connection: socket.socket, seconds: float) -> float | None:
    connection.settimeout(seconds)
    start = time.monotonic()
    try:
        data = connection.recv(100)
    except TimeoutError:
        return None
    return time.monotonic() - start if data == b"" else None


def test_slow_or_silent_request_heads_are_cut_at_the_deadline() -> None:
    async def main() -> tuple[float | None, float | None, bytes, bytes]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(_app, lifespan="off", log_level="warning", http=header_timeout_protocol(0.5))
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)

        def probe() -> tuple[float | None, float | None, bytes, bytes]:
            silent = socket.create_connection(("127.0.0.1", port))
            half = socket.create_connection(("127.0.0.1", port))
            half.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            fine = socket.create_connection(("127.0.0.1", port))
            fine.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            first = _response(fine)
            time.sleep(0.8)  # past the deadline, but a keep-alive connection between requests is not cut by it
            fine.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            second = _response(fine)
            return _closed_within(silent, 3), _closed_within(half, 3), first, second

        try:
            return await asyncio.to_thread(probe)
        finally:
            server.should_exit = True
            await task

    silent, half, first, second = asyncio.run(main())
    assert silent is not None and half is not None, "both slow connections must be closed by the server"
    assert b" 200 " in first and b" 200 " in second
