"""`ordered_map`: answers in request order, and a stream that ends early leaves no work running behind it."""

import asyncio
from collections.abc import AsyncIterator

from serving.streaming import ordered_map


async def _numbers(count: int | None = None) -> AsyncIterator[int]:
    i = 0
    while count is None or i < count:
        yield i
        i += 1
        await asyncio.sleep(0)


def test_answers_come_in_request_order() -> None:
    async def handle(i: int) -> int:
        await asyncio.sleep(0.001 * (5 - i % 5))  # later items finish first
        return i * 10

    async def scenario() -> list[int]:
        return [answer async for answer in ordered_map(_numbers(12), handle, window=4)]

    assert asyncio.run(scenario()) == [i * 10 for i in range(12)]


def test_ending_the_stream_early_cancels_the_items_in_flight() -> None:
    started: list[int] = []
    finished: list[int] = []
    cancelled: list[int] = []

    async def handle(i: int) -> int:
        started.append(i)
        try:
            await asyncio.sleep(0.01 if i < 3 else 0.5)  # the first three answer quickly
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        finished.append(i)
        return i

    async def scenario() -> list[int]:
        stream = ordered_map(_numbers(), handle, window=8)
        taken = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # the client went away after three answers
        await asyncio.sleep(0.7)  # anything left running would have finished by now
        return taken

    assert asyncio.run(scenario()) == [0, 1, 2]
    assert len(started) > 3  # the window had read ahead
    assert finished == [0, 1, 2] and sorted(cancelled) == started[3:]


def test_without_room_the_next_item_waits_for_the_streams_own_items() -> None:
    """`room` says whether the server can take one more item; a stream with items in flight waits for one of its own
    rather than start one that its server would refuse. With none in flight, an item starts regardless."""
    inflight = 0
    most = 0

    async def handle(i: int) -> int:
        nonlocal inflight, most
        inflight += 1
        most = max(most, inflight)
        await asyncio.sleep(0.002)
        inflight -= 1
        return i

    async def scenario() -> list[int]:
        return [answer async for answer in ordered_map(_numbers(6), handle, room=lambda: inflight < 2)]

    assert asyncio.run(scenario()) == list(range(6))
    assert most == 2
    most = 0

    async def never_room() -> list[int]:
        return [answer async for answer in ordered_map(_numbers(3), handle, room=lambda: False)]

    assert asyncio.run(never_room()) == [0, 1, 2] and most == 1
