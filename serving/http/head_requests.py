"""HEAD requests: answered on every GET route as the GET would be, without its body (RFC 9110 section 9.3.2).

FastAPI routes answer only the methods they name, so `curl -I`, a load balancer's HEAD health check or a link
checker got 405 from every GET route (Starlette's plain routes add HEAD themselves; FastAPI's do not). This layer,
added last, hands a HEAD to the app as a GET and passes on only the answer's head: its status and headers,
`Content-Length` included (the GET's), and an empty body. Every layer under it (auth, roles, limits, metrics) sees
a GET, so a HEAD needs what the GET needs and is counted as one.

A stream (a job's progress events, an export, `outputs.zip`) is not read: once the head is out, the app's
`receive` answers a disconnect (also a `receive` already waiting then: Starlette's stream listens for the client
leaving from before its head is sent), which ends a Starlette stream as a client leaving does, and whatever body it
still sends is dropped. The HTTP server (uvicorn, or Ray's proxy) knows the request was a HEAD from its own scope and
writes no body either."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
DISCONNECT: Message = {"type": "http.disconnect"}


class HeadRequestMiddleware:
    """A HEAD becomes a GET for the app; only its answer's head is sent on. Added last, so every imgserve layer is
    under it (Starlette's own error layer and, with auth off, the listener's host guard are outside)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = asyncio.Event()

        async def head_send(message: Message) -> None:
            if answered.is_set() or message["type"] != "http.response.start":
                return  # the body, and anything after the head: not sent
            answered.set()
            await send(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def head_receive() -> Message:
            if answered.is_set():
                return DISCONNECT  # ends a stream whose head is out
            received = asyncio.ensure_future(receive())
            head_out = asyncio.ensure_future(answered.wait())
            await asyncio.wait((received, head_out), return_when=asyncio.FIRST_COMPLETED)
            head_out.cancel()
            if received.done():
                return received.result()
            received.cancel()  # a wait for the client to leave, whatever server runs us: the answer is complete
            return DISCONNECT

        await self.app({**scope, "method": "GET"}, head_receive, head_send)
