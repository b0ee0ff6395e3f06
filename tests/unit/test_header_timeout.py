"""The direct HTTP listener's deadline for request heads (#18, slowloris on headers), on a real uvicorn server
listening on a local port: a connection that sends nothing, or half a request head, is closed at the deadline; a
complete request on the same kind of connection is answered, and so is the next one on its keep-alive connection.
Also the same protocol's `ResponseHeadCork`: a response's head and body leave in one send, a streamed head is not
held back until its body."""

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import uvicorn

from serving.http.header_timeout import ResponseHeadCork, header_timeout_protocol

pytestmark = pytest.mark.unit
T = TypeVar("T")


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


def _with_server(app: object, header_timeout_s: float, probe: Callable[[int], T]) -> T:
    """`probe(port)` run in a thread against a real uvicorn server of `app` on a free local port."""

    async def main() -> T:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", http=header_timeout_protocol(header_timeout_s)
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            return await asyncio.to_thread(probe, port)
        finally:
            server.should_exit = True
            await task

    return asyncio.run(main())


def test_slow_or_silent_request_heads_are_cut_at_the_deadline() -> None:
    def probe(port: int) -> tuple[float | None, float | None, bytes, bytes]:
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

    silent, half, first, second = _with_server(_app, 0.5, probe)
    assert silent is not None and half is not None, "both slow connections must be closed by the server"
    assert b" 200 " in first and b" 200 " in second


class _RecordingTransport:
    """Records what reaches the transport, write by write."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sends.append(bytes(data))

    def writelines(self, chunks: tuple[bytes, ...]) -> None:
        self.sends.append(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def test_a_response_head_and_its_body_leave_in_one_send() -> None:
    loop = asyncio.new_event_loop()
    try:
        transport = _RecordingTransport()
        cork = ResponseHeadCork(transport, loop)  # type: ignore[arg-type]
        cork.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert transport.sends == []  # held for the body
        cork.write(b"ok")
        cork.write(b"more")
        loop.run_until_complete(asyncio.sleep(0))  # the flush scheduled for the head finds nothing to send
        assert transport.sends == [b"HTTP/1.1 200 OK\r\n\r\nok", b"more"]
    finally:
        loop.close()


def test_a_head_whose_body_does_not_follow_goes_out_on_the_next_loop_iteration_or_at_close() -> None:
    loop = asyncio.new_event_loop()
    try:
        streamed, closed = _RecordingTransport(), _RecordingTransport()
        ResponseHeadCork(streamed, loop).write(b"head")  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.sleep(0))
        assert streamed.sends == [b"head"]
        cork = ResponseHeadCork(closed, loop)  # type: ignore[arg-type]
        cork.write(b"head")
        cork.close()
        assert closed.sends == [b"head"] and closed.closed
    finally:
        loop.close()


async def _slow_stream(scope: dict, receive: object, send: object) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})  # type: ignore[operator]
    await asyncio.sleep(0.5)
    await send({"type": "http.response.body", "body": b"late", "more_body": False})  # type: ignore[operator]


def test_on_a_real_server_a_streamed_head_is_not_held_until_its_body() -> None:
    def probe(port: int) -> tuple[bytes, bytes]:
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        connection.settimeout(0.3)  # the body comes 0.5 s after the head
        head = connection.recv(1000)
        connection.settimeout(3)
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            rest += connection.recv(1000)
        return head, rest

    head, rest = _with_server(_slow_stream, 5, probe)
    assert head.startswith(b"HTTP/1.1 200 ") and b"late" not in head
    assert b"late" in rest


MALFORMED_REQUESTS = {
    "negative length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "length and chunked": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    "bad chunk size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "control character in a header": b"GET / HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\x01b\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
}


@pytest.mark.parametrize("request_bytes", MALFORMED_REQUESTS.values(), ids=MALFORMED_REQUESTS.keys())
def test_a_request_the_http_parser_refuses_gets_the_json_error_format(request_bytes: bytes) -> None:
    """uvicorn answers what httptools cannot parse with a plain-text 400; the listener answers it as every other
    refusal: a JSON body with `error` and `kind`, and the connection closed (its framing cannot be trusted)."""

    def probe(port: int) -> bytes:
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(request_bytes)
        connection.settimeout(3)
        data = b""
        while chunk := connection.recv(4096):
            data += chunk
        return data

    answer = _with_server(_app, 5.0, probe)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type: application/json" in head.lower(), head
    payload = json.loads(body)
    assert payload["kind"] == "bad_request" and "malformed HTTP request" in payload["error"], payload


def _all_of(connection: socket.socket, timeout_s: float = 5.0) -> bytes:
    connection.settimeout(timeout_s)
    data = b""
    try:
        while chunk := connection.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


async def _echo_length(scope: dict, receive: object, send: object) -> None:
    """Answers how many body bytes it read."""
    size, more = 0, True
    while more:
        message = await receive()  # type: ignore[operator]
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


def _response_of_half_limit(port: int) -> bytes:
    from serving.http.header_timeout import MAX_HEAD_BYTES

    fine = socket.create_connection(("127.0.0.1", port))
    fine.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"c" * (MAX_HEAD_BYTES // 2) + b"\r\n\r\n")
    return _response(fine)


@pytest.mark.parametrize("shape", ["one huge header", "many headers", "one write"])
def test_a_request_head_over_the_limit_is_a_431_and_closed(shape: str) -> None:
    """uvicorn kept every header of a request, however large (600 MB in 1.5 s grew a replica by 500 MB)."""

    def probe(port: int) -> tuple[bytes, bytes]:
        big = socket.create_connection(("127.0.0.1", port))
        if shape == "one write":  # a whole 70 KB head in one send: complete before a read could count it
            big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
            return _all_of(big), _response_of_half_limit(port)
        big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        try:
            for i in range(64):  # 4 MB, sent until the server closes
                if shape == "one huge header":
                    big.sendall((b"X-Big: " if i == 0 else b"") + b"a" * 65536)
                else:
                    big.sendall(b"".join(b"X-H%d-%d: %s\r\n" % (i, j, b"b" * 1000) for j in range(64)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _all_of(big), _response_of_half_limit(port)

    refused, fine = _with_server(_app, 5.0, probe)
    assert refused.startswith(b"HTTP/1.1 431 "), refused[:200]
    assert json.loads(refused.partition(b"\r\n\r\n")[2])["kind"] == "too_large"
    assert b" 200 " in fine  # a head of half the limit is served


def test_an_upgrade_other_than_websocket_keeps_its_body_or_is_refused() -> None:
    """`Upgrade: h2c` (curl --http2 on http://): httptools skips the body of any upgrade request, so the request
    was served as if empty. With a body it is a 400 saying why; without one it is served as HTTP/1.1."""
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"

    def probe(port: int) -> tuple[bytes, bytes]:
        with_body = socket.create_connection(("127.0.0.1", port))
        with_body.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n" + upgrade + b"Content-Length: 5\r\n\r\nhello")
        without = socket.create_connection(("127.0.0.1", port))
        without.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n")
        return _all_of(with_body), _all_of(without, 1.0)

    with_body, without = _with_server(_echo_length, 5.0, probe)
    assert with_body.startswith(b"HTTP/1.1 400 "), with_body  # was 200 with "0" bytes read
    assert b"--http1.1" in with_body and b"connection: close" in with_body.lower()
    assert without.startswith(b"HTTP/1.1 200 ") and without.endswith(b"\r\n\r\n0")


async def _refuse_unread(scope: dict, receive: object, send: object) -> None:
    """Answers at once without reading the body, as a refusal (403, 401, 405) does."""
    await send({"type": "http.response.start", "status": 403, "headers": [(b"content-length", b"2")]})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"no"})  # type: ignore[operator]


def test_a_body_still_trickling_after_its_answer_has_the_heads_deadline() -> None:
    """A refusal answered without reading the body: the client trickling the rest kept the connection for ever
    (each byte restarted nothing: no deadline applied once the head was in)."""

    def probe(port: int) -> tuple[bytes, float | None]:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
        slow.settimeout(5)
        answer = slow.recv(200)
        start = time.monotonic()
        closed = None
        while time.monotonic() - start < 5:
            try:
                slow.sendall(b"y")
            except (BrokenPipeError, ConnectionResetError):
                closed = time.monotonic() - start
                break
            slow.settimeout(0.1)
            try:
                if slow.recv(100) == b"":
                    closed = time.monotonic() - start
                    break
            except TimeoutError:
                pass
        return answer, closed

    answer, closed = _with_server(_refuse_unread, 0.5, probe)
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert closed is not None and closed < 3, closed  # closed at the deadline (0.5 s), not kept while trickling


@pytest.mark.parametrize(
    "second",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",  # two lengths
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000,  # a head over the limit (431)
    ],
    ids=["malformed", "head-too-large"],
)
def test_a_request_pipelined_before_a_refused_one_keeps_its_answer(second: bytes) -> None:
    """The refusal was written at once and the connection closed while the first request's answer was still being
    made: only the 400 came back, which the client read as the first request's answer (found by an HTTP review
    helper; the access log still said 200 for it). Now the first answer, then the refusal."""

    def probe(port: int) -> bytes:
        connection = socket.create_connection(("127.0.0.1", port))
        connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + second)
        return _all_of(connection)

    answers = _with_server(_app, 5.0, probe)
    assert answers.startswith(b"HTTP/1.1 200 ") and b"\r\n\r\nok" in answers, answers[:300]
    assert answers.count(b"HTTP/1.1 ") == 2 and answers.split(b"\r\n\r\nok", 1)[1].startswith(b"HTTP/1.1 4")
