"""Ordered concurrent processing of a request stream (gRPC bidirectional streaming).

Items are processed concurrently, so a stream's images join the model's dynamic batches, while
responses leave in request order. Reading runs in its own task, so a client that sends one request
and waits for its answer (lock-step) never deadlocks.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def ordered_map(
    source: AsyncIterator[T],
    handle: Callable[[T], Awaitable[R]],
    window: int = 32,
    room: Callable[[], bool] | None = None,
) -> AsyncIterator[R]:
    """Yield `handle(item)` for each item of `source`, in order, with at most `window` in flight.

    `handle` should turn its own failures into a response value: an exception ends the stream. `room`: whether the
    server has room for one more item now (a free admission slot); while it has none, the next item waits for one
    of this stream's own items to finish rather than start and be refused (a stream is not overloading the server
    with its own items: with `max_inflight: 1` every frame after the first was refused `overloaded`). With none of
    its items in flight, an item starts whatever `room` says, and its handler refuses it if the server is full.
    """
    queue: asyncio.Queue[asyncio.Future[R] | None] = asyncio.Queue(maxsize=window)
    running: set[asyncio.Future[R]] = set()

    async def read() -> None:
        try:
            async for item in source:
                while room is not None and running and not room():
                    await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
                future = asyncio.ensure_future(handle(item))
                running.add(future)
                future.add_done_callback(running.discard)
                try:
                    await queue.put(future)
                except asyncio.CancelledError:
                    future.cancel()  # the stream ended while this item waited for room: nobody will read it
                    raise
        finally:
            await queue.put(None)

    reader = asyncio.create_task(read())
    try:
        while (future := await queue.get()) is not None:
            yield await future
        await reader  # surface a failure of the source itself
    finally:
        # The stream ended early (the client cancelled or went away, or a handler raised): the items still in
        # flight have no one to answer, so they are cancelled rather than left to hold batch slots and queue room.
        reader.cancel()
        while not queue.empty():
            pending = queue.get_nowait()
            if pending is not None:
                pending.cancel()
