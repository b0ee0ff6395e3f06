"""A deadline for request headers on the direct HTTP listeners (slowloris on headers).

uvicorn times out idle keep-alive connections only. A client that opens a connection and sends a request head one
byte a minute, or nothing at all, holds the connection and its buffers forever. This is uvicorn's httptools protocol
with one addition: the whole request head must arrive within `header_timeout_s` of the connection opening or of the
request's first byte, or the connection is closed. The body has its own deadline (`BodySizeLimitMiddleware`).
"""

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.metrics import ERRORS


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

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def header_timeout_protocol(header_timeout_s: float) -> type[Any]:
    """The protocol class for uvicorn's `http=` setting, with this deadline."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})
