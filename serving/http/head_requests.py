"""HEAD requests: answered on every GET route as the GET would be, without its body (RFC 9110 section 9.3.2).

FastAPI routes answer only the methods they name, so `curl -I`, a load balancer's HEAD health check or a link
checker got 405 from every GET route (Starlette's plain routes add HEAD themselves; FastAPI's do not). This layer,
the outermost, hands a HEAD to the app as a GET and passes on only the answer's head: its status and headers,
`Content-Length` included (the GET's), and an empty body. Every layer under it (auth, roles, limits, metrics) sees
a GET, so a HEAD needs what the GET needs and is counted as one.

A stream (a job's progress events, an export, `outputs.zip`) is not read: once the head is out, the app's next
`receive` is a disconnect, which ends a Starlette stream as a client leaving does, and whatever body it still
sends is dropped. The HTTP server (uvicorn, or Ray's proxy) knows the request was a HEAD from its own scope and
writes no body either."""

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class HeadRequestMiddleware:
    """A HEAD becomes a GET for the app; only its answer's head is sent on."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return
        answered = False

        async def head_send(message: Message) -> None:
            nonlocal answered
            if answered or message["type"] != "http.response.start":
                return  # the body, and anything after the head: not sent
            answered = True
            await send(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def head_receive() -> Message:
            if answered:
                return {"type": "http.disconnect"}  # ends a stream whose head is out
            return await receive()

        await self.app({**scope, "method": "GET"}, head_receive, head_send)
