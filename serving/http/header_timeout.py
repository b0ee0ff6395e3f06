"""A deadline for request headers on the direct HTTP listeners (slowloris on headers).

uvicorn times out idle keep-alive connections only. A client that opens a connection and sends a request head one
byte a minute, or nothing at all, holds the connection and its buffers forever. This is uvicorn's httptools protocol
with one addition: the whole request head must arrive within `header_timeout_s` of the connection opening or of the
request's first byte, or the connection is closed. The body has its own deadline (`serving.http.body_limit`).

A request httptools cannot parse gets the JSON error format (400 `bad_request`) instead of uvicorn's plain text.

It also sends each response's head and the start of its body in one write (`ResponseHeadCork`): uvicorn writes them
separately, two sends per answer, each a syscall under the GIL on the replica's event loop (~11 % of that loop's
GIL time on the web mix, py-spy) and a second segment the client wakes up for.
"""

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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


MALFORMED_REQUEST_BODY = json.dumps(
    {
        "error": "malformed HTTP request: the request line, a header or the body's framing could not be parsed",
        "kind": "bad_request",
    }
).encode()


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

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
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            # a WebSocket handshake: uvicorn hands the connection to its WebSocket protocol, no cycle was made
            # (setting the cork on none failed inside the parser: every upgrade got a plain-text 400)
            return
        self.cycle.transport = ResponseHeadCork(self.transport, self.loop)  # type: ignore[assignment]

    def send_400_response(self, msg: str) -> None:
        """What httptools cannot parse (a negative or doubled Content-Length, Content-Length with chunked, a bad
        chunk size, a control character or an obs-fold in a header): uvicorn answers it with a plain-text 400; here
        it is the JSON every other refusal is, counted, and the connection closed (its framing cannot be trusted)."""
        ERRORS.labels("(listener)", "bad_request").inc()
        body = MALFORMED_REQUEST_BODY
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
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
