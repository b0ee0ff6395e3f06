"""The request body's limits on every HTTP listener: its size (413) and one deadline for all of it (408); and a
compressed body inflated for the routes (`serving.http.body_encoding`), held to the same size."""

import asyncio
from typing import Any

from serving.errors import RequestTimeoutError, RequestTooLargeError
from serving.http.body_encoding import BodyInflater, UnsupportedContentEncodingError
from serving.http.middleware import Message, Receive, Scope, Send, send_json_error
from serving.metrics import ERRORS


class BodySizeLimitMiddleware:
    """Answers 413 before reading a body whose Content-Length, or streamed size, exceeds `max_bytes`, and 408 when
    the whole body has not arrived within `read_timeout_s` (a slow upload must not hold an admission slot). A body
    with a Content-Encoding reaches the app inflated, without that header, and sized as a chunked body is (its
    Content-Length was the compressed size); what it inflates to is held to `max_bytes` too."""

    def __init__(self, app: Any, max_bytes: int, read_timeout_s: float = 60.0):
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s

    async def _reject(self, send: Send, size: str) -> None:
        message = f"request body of {size} bytes exceeds the limit of {self.max_bytes} bytes"
        ERRORS.labels("(listener)", "too_large").inc()  # answered before any route: counted here, as every error is
        await send_json_error(send, 413, message, "too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, declared.decode())
            return
        inflater: BodyInflater | None = None
        if b"content-encoding" in headers:
            try:
                inflater = BodyInflater.for_encoding(headers[b"content-encoding"].decode("latin-1"), self.max_bytes)
            except UnsupportedContentEncodingError as exc:  # 415 before the body is read
                await send_json_error(send, exc.http_status, str(exc), exc.kind, ((b"connection", b"close"),))
                return
            if inflater is not None:
                plain = [(k, v) for k, v in scope["headers"] if k not in (b"content-encoding", b"content-length")]
                scope = {**scope, "headers": [*plain, (b"transfer-encoding", b"chunked")]}
        seen = 0
        body_done = False
        deadline = BodyDeadline(self.read_timeout_s)

        async def limited_receive() -> Message:
            nonlocal seen, body_done
            if body_done:  # after the body only a disconnect can come: wait for it as long as the app likes
                return await receive()
            message = await deadline.wait(receive)
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if body_done:
                    deadline.cancel()
                if seen > self.max_bytes:
                    raise RequestTooLargeError(f"request body exceeds the limit of {self.max_bytes} bytes")
                if inflater is not None:
                    message = {**message, "body": inflater.feed(message.get("body", b""), final=body_done)}
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            deadline.cancel()


class BodyDeadline:
    """One timer for a request body's whole deadline, armed at the first wait for its bytes: a 1 MB camera photo
    arrives in ~16 ASGI messages, and an `asyncio.timeout` around each wait cost ~20 us per message (a timer handle
    made, pushed on the loop's heap and cancelled each time: ~0.35 ms of the event loop per camera photo). When the
    timer fires while the request waits for body bytes, that wait is cancelled and becomes the 408 (as
    `asyncio.timeout` does it: a cancellation of its own, told apart from anyone else's with `Task.uncancel`); when
    it fires between two messages, the next wait raises it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._at = self._loop.time() + seconds
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: asyncio.Task[Any] | None = None
        self._expired = False

    def _expire(self) -> None:
        self._expired = True
        if self._waiting is not None:
            self._waiting.cancel()

    def _timeout(self) -> Exception:
        return RequestTimeoutError(f"request body not received within {self.seconds:g} s")

    async def wait(self, receive: Receive) -> Message:
        if self._expired or self._loop.time() >= self._at:
            raise self._timeout()
        if self._timer is None:
            self._timer = self._loop.call_at(self._at, self._expire)
        task = self._waiting = asyncio.current_task()
        try:
            return await receive()
        except asyncio.CancelledError:
            if self._expired and task is not None and task.uncancel() == 0:  # ours alone, not the caller's
                raise self._timeout() from None
            raise
        finally:
            self._waiting = None

    def cancel(self) -> None:
        """The body is complete (or the request over): the timer goes."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
