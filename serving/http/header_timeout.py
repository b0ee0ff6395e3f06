"""A deadline for request headers on the direct HTTP listeners (slowloris on headers).

uvicorn times out idle keep-alive connections only. A client that opens a connection and sends a request head one
byte a minute, or nothing at all, holds the connection and its buffers forever. This is uvicorn's httptools protocol
with one addition: the whole request head must arrive within `header_timeout_s` of the connection opening or of the
request's first byte, or the connection is closed. The body has its own deadline (`serving.http.body_limit`).

A request httptools cannot parse gets the JSON error format (400 `bad_request`) instead of uvicorn's plain text.
Three more limits uvicorn leaves out: a request head (line and headers) over `MAX_HEAD_BYTES` is a 431 (uvicorn kept
every header, however large: 600 MB of them in 1.5 s grew a replica by 500 MB, before any key was asked for); a
request with a body that asks for a protocol upgrade other than WebSocket (`Upgrade: h2c`, which `curl --http2` and
some Java clients send on http://) is a 400 saying so (httptools then skips the body: the request was served as
if it had none); and a connection whose answer went out before its body arrived (a refusal that never reads it)
has `header_timeout_s` to send the rest, then is closed (a client trickling it held the connection for ever).

It also sends each response's head and the start of its body in one write (`ResponseHeadCork`): uvicorn writes them
separately, two sends per answer, each a syscall under the GIL on the replica's event loop (~11 % of that loop's
GIL time on the web mix, py-spy) and a second segment the client wakes up for.
"""

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.access_log import log_request
from serving.metrics import ERRORS


class ResponseHeadCork:
    """The transport as one response sees it: the response head (the first write) is held until the body's first
    write, and both go in one `writelines` (one send, one TCP segment for a small answer, one wake-up of the
    client) instead of two. A head whose body does not follow in the same loop iteration (a stream) goes out on
    the next one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started:
            self._started = True
            self._head = data
            self._loop.call_soon(self.flush)
        elif self._head is not None:
            head, self._head = self._head, None
            self._transport.writelines((head, data))
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


MAX_HEAD_BYTES = 64 * 1024  # a request line and headers, together (nginx's default allows 4 x 8 KB of them)
MALFORMED_REQUEST = "malformed HTTP request: the request line, a header or the body's framing could not be parsed"
HEAD_TOO_LARGE = f"request line and headers exceed {MAX_HEAD_BYTES} bytes"
UPGRADE_WITH_BODY = (
    "a request with a body cannot ask to upgrade the connection (Upgrade: {protocol!r}): this listener speaks "
    "HTTP/1.1 and would lose the body; send it without the Upgrade header (curl: --http1.1 instead of --http2)"
)


class _RefusedHead(Exception):
    """A request the listener answers itself, with this status, and closes: raised in a parser callback, it stops
    httptools, and uvicorn's error path (`send_400_response`) answers it."""

    def __init__(self, status: bytes, kind: str, message: str):
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._reading_head = True  # until a request's headers are complete (again after each request)
        self._head_bytes = 0  # bytes received while the head is incomplete
        self._parsed_head = 0  # bytes of the head httptools has parsed
        self._refused: _RefusedHead | None = None
        self._deferred: _RefusedHead | None = None  # a refusal waiting for earlier requests' answers
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deferred is not None:  # the connection ends after the refusal: nothing more is read
            return
        super().data_received(data)
        if self._reading_head:  # every byte of a data chunk that leaves the head incomplete is the head's
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self._refuse(_RefusedHead(b"431 Request Header Fields Too Large", "too_large", HEAD_TOO_LARGE))

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            ERRORS.labels("(listener)", "header_timeout").inc()
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True
        self._parsed_head = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_parsed(self, size: int) -> None:
        """The head's parsed bytes: a head that arrives whole in one read (up to 256 KB from uvloop) is complete
        before `data_received` can count it; counted here as httptools hands over its parts, it is held to the
        limit all the same (a 70 KB header in one write passed)."""
        self._parsed_head += size
        if self._parsed_head > MAX_HEAD_BYTES:
            self._refused = _RefusedHead(b"431 Request Header Fields Too Large", "too_large", HEAD_TOO_LARGE)
            raise self._refused  # httptools stops parsing; uvicorn calls send_400_response, which answers it

    def on_headers_complete(self) -> None:
        self._disarm()
        self._reading_head, self._head_bytes = False, 0
        upgrade = self._get_upgrade() if self.parser.should_upgrade() else None
        if upgrade is not None and upgrade != b"websocket" and self._has_body():
            # httptools takes any upgrade request to have no body: the body would be lost (uvicorn #2722)
            protocol = upgrade.decode("latin-1")[:40]
            self._refused = _RefusedHead(b"400 Bad Request", "bad_request", UPGRADE_WITH_BODY.format(protocol=protocol))
            raise self._refused  # httptools stops parsing; uvicorn calls send_400_response, which answers it
        super().on_headers_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            # a WebSocket handshake: uvicorn hands the connection to its WebSocket protocol, no cycle was made
            # (setting the cork on none failed inside the parser: every upgrade got a plain-text 400)
            return
        self.cycle.transport = ResponseHeadCork(self.transport, self.loop)  # type: ignore[assignment]

    def _has_body(self) -> bool:
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0")):
                return True
        return False

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self._arm()  # answered before its body arrived: the rest has the head's deadline, then the close
        if self._deferred is not None and not self._answering():
            refused, self._deferred = self._deferred, None
            self._refuse(refused)

    def _answering(self) -> bool:
        """Whether an earlier request of this connection is still being answered: one queued behind another
        (pipelined), or the current one whose body is in and whose answer is not finished. A refusal then waits
        for those answers (written at once, it closed the connection first: a valid request pipelined before a
        malformed one lost its answer and the client read the 400 as that request's). A request whose own body is
        still arriving is the refused one: answered at once."""
        cycle = self.cycle
        return bool(self.pipeline) or (cycle is not None and not cycle.response_complete and not cycle.more_body)

    def send_400_response(self, msg: str) -> None:
        """What httptools cannot parse (a negative or doubled Content-Length, Content-Length with chunked, a bad
        chunk size, a control character or an obs-fold in a header): uvicorn answers it with a plain-text 400; here
        it is the JSON every other refusal is, counted, and the connection closed (its framing cannot be trusted).
        A head refused by a parser callback (`_RefusedHead`, raised inside the parser) is answered the same way."""
        self._refuse(self._refused or _RefusedHead(b"400 Bad Request", "bad_request", MALFORMED_REQUEST))

    def _refuse(self, refused: _RefusedHead) -> None:
        if self._answering():
            if self._deferred is None:
                self._deferred = refused
                self.flow.pause_reading()
            return
        ERRORS.labels("(listener)", refused.kind).inc()
        log_request("http", "(listener)", "", refused.status[:3].decode(), 0.0, None)  # no route ever saw it
        body = json.dumps({"error": refused.message, "kind": refused.kind}).encode()
        head = [b"HTTP/1.1 " + refused.status + b"\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body), b"connection: close\r\n"]
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def header_timeout_protocol(header_timeout_s: float) -> type[Any]:
    """The protocol class for uvicorn's `http=` setting, with this deadline."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})
