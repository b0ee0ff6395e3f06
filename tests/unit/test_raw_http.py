"""loadtests.raw_http, the bench's HTTP client, against a scripted asyncio server on a local port: what it sends,
Content-Length and chunked answers, keep-alive and its ends (Connection: close, a cut answer, a silent server)."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from loadtests.raw_http import RawHttpClient, raw_http_client

pytestmark = pytest.mark.unit

Answer = Callable[[bytes, bytes], bytes | None]  # (request head, body) -> raw answer; None: hang up without one


class Seen:
    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.connections = 0


async def serve(answer: Answer, check: Callable[[str, Seen], Awaitable[None]]) -> None:
    """Run `check(url, what the server saw)` against a server answering every request with `answer`."""
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"Content-"))
                body = await reader.readexactly(length)
                seen.heads.append(head)
                raw = answer(head, body)
                if raw is None:
                    break
                writer.write(raw)
                await writer.drain()
                if b"Connection: close" in raw:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        await check(f"http://127.0.0.1:{port}", seen)


def plain(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_requests_reuse_one_connection_and_send_what_they_are_given() -> None:
    async def check(url: str, seen: Seen) -> None:
        async with raw_http_client(url + "/base", 4, {"Authorization": "Bearer k"}) as client:
            answers = [await client.post("/v1/classify?top_k=1", b"x" * n, {"X-Extra": "1"}) for n in (3, 5, 7)]
        assert [(a.status, a.body, a.headers["content-type"]) for a in answers if a] == [
            (200, b"xxx", "text/plain"),
            (200, b"xxxxx", "text/plain"),
            (200, b"xxxxxxx", "text/plain"),
        ]
        assert seen.connections == 1  # one after the other: the same connection
        first = seen.heads[0].decode()
        assert first.startswith("POST /base/v1/classify?top_k=1 HTTP/1.1\r\n")
        for line in (f"Host: {url.removeprefix('http://')}", "Authorization: Bearer k", "X-Extra: 1", "Length: 3"):
            assert line in first, first

    asyncio.run(serve(lambda head, body: plain(body), check))


def test_keep_alive_close_and_chunked_answers() -> None:
    def answer(head: bytes, body: bytes) -> bytes:
        if body == b"close":
            return plain(b"bye", "Connection: close\r\n")
        if body == b"chunked":
            head = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            return head + b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"  # an extension, then a trailer
        return plain(body)

    async def check(url: str, seen: Seen) -> None:
        client = RawHttpClient(url, 1)
        chunked = await client.post("/", b"chunked")
        assert chunked is not None and (chunked.status, chunked.body) == (201, b"abcde")
        assert [(await client.post("/", b)) is not None for b in (b"a", b"close", b"b")] == [True, True, True]
        client.close()
        assert (len(seen.heads), seen.connections) == (4, 2)  # the answer that said close ended the first

    asyncio.run(serve(answer, check))


def test_a_cut_or_missing_answer_is_none_and_the_next_request_reconnects() -> None:
    def answer(head: bytes, body: bytes) -> bytes | None:
        if body == b"cut":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly a part"
        if body == b"hang up":
            return None
        return plain(body)

    async def check(url: str, seen: Seen) -> None:
        client = RawHttpClient(url, 2)
        results = [await client.post("/", body) for body in (b"ok", b"cut", b"ok", b"hang up", b"again")]
        assert [r.body if r else None for r in results] == [b"ok", None, b"ok", None, b"again"]
        client.close()
        assert seen.connections == 3

    asyncio.run(serve(answer, check))


def test_a_server_that_never_answers_times_out() -> None:
    async def check(url: str, seen: Seen) -> None:
        client = RawHttpClient(url, 1, timeout_s=0.3)
        assert await client.post("/", b"slow") is None
        client.close()

    def silent(head: bytes, body: bytes) -> bytes:
        return b""  # writes nothing and keeps the connection open

    asyncio.run(serve(silent, check))


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="plain http"):
        RawHttpClient("https://127.0.0.1:8443", 1)
