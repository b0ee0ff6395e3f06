"""Progress streams (`GET /v1/jobs/{id}/progress`): how many are open, per replica and per tenant, and the response
that counts one closed when it ends. Streams hold no admission slot (serving.admission): these caps bound them."""

from collections import Counter
from collections.abc import AsyncGenerator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from serving.errors import OverloadedError
from serving.security.errors import RateLimitedError

MAX_PROGRESS_STREAMS = 64  # open progress streams per replica; they hold no admission slot (serving.admission)
MAX_TENANT_PROGRESS_STREAMS = 16  # of which one tenant may hold: one tenant's streams cannot lock out the others
TENANT_STREAMS_RETRY_AFTER_S = 5.0  # a tenant at its cap: its own streams end as its jobs do (or it polls)
_open_streams = 0
_tenant_streams: Counter[str] = Counter()


def take_stream_slot(tenant: str) -> Callable[[], None]:
    """Count one more open progress stream of `tenant`, checked against both caps in the same step (503 / 429
    beyond them; counted only when its generator first ran, 40 opens at once all passed a cap of 16). Returns the
    call that counts it closed, once however often it is called."""
    global _open_streams
    if _open_streams >= MAX_PROGRESS_STREAMS:
        raise OverloadedError("too many progress streams are open on this replica; poll the job instead")
    if _tenant_streams[tenant] >= MAX_TENANT_PROGRESS_STREAMS:
        raise RateLimitedError(
            f"your tenant already has {MAX_TENANT_PROGRESS_STREAMS} progress streams open on this replica, its"
            " limit; poll the job instead, or close one",
            TENANT_STREAMS_RETRY_AFTER_S,
        )
    _open_streams += 1
    _tenant_streams[tenant] += 1
    closed = False

    def close() -> None:
        global _open_streams
        nonlocal closed
        if not closed:
            closed = True
            _open_streams -= 1
            _tenant_streams[tenant] -= 1

    return close


class ClosingStreamingResponse(StreamingResponse):
    """A stream whose generator is closed, and `on_close` run, when the response ends, however it ends. Starlette
    leaves a generator that was suspended at a `yield` when the client went away (or that never started) as it is,
    its `finally` run by the garbage collector some time later: a progress stream stayed counted open till then."""

    def __init__(self, body: AsyncGenerator[str, None], on_close: Callable[[], None], **kwargs: Any):
        super().__init__(body, **kwargs)
        self._body, self._on_close = body, on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._body.aclose()
            finally:
                self._on_close()
