"""`BatchQueue` in plain asyncio: batches by contract, per-item errors, concurrency, load shedding, runtime config."""

import asyncio

import pytest

from serving.errors import OverloadedError
from serving.stages.batching import BatchQueue, Queued

pytestmark = pytest.mark.unit


def test_items_share_batches_and_each_caller_gets_its_own_result() -> None:
    sizes: list[int] = []

    async def double(items: list[Queued[int]]) -> list[int | BaseException]:
        sizes.append(len(items))
        await asyncio.sleep(0.005)
        return [ValueError(f"bad {q.item}") if q.item == 3 else q.item * 2 for q in items]

    async def scenario() -> list[int | BaseException]:
        queue: BatchQueue[int, int] = BatchQueue(double, max_batch_size=4, batch_wait_timeout_s=0.0)
        return await asyncio.gather(*(queue.submit(i) for i in range(10)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[:3] == [0, 2, 4] and isinstance(results[3], ValueError) and results[4:] == [8, 10, 12, 14, 16, 18]
    assert sum(sizes) == 10 and max(sizes) == 4 and len(sizes) >= 3


def test_a_broken_batch_contract_fails_every_caller_of_that_batch() -> None:
    async def short(items: list[Queued[int]]) -> list[int | BaseException]:
        return [1]

    async def scenario() -> list[int | BaseException]:
        queue: BatchQueue[int, int] = BatchQueue(short, 8, 0.0)
        return await asyncio.gather(*(queue.submit(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(r, RuntimeError) and "3 inputs" in str(r) for r in asyncio.run(scenario()))


def test_concurrent_batches_overlap_and_a_full_queue_sheds_load() -> None:
    running = peak = 0

    async def slow(items: list[Queued[int]]) -> list[int | BaseException]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1
        return [q.item for q in items]

    async def scenario() -> list[int | BaseException]:
        queue: BatchQueue[int, int] = BatchQueue(slow, 1, 0.0, max_concurrent_batches=3, max_queued=5)
        return await asyncio.gather(*(queue.submit(i) for i in range(12)), return_exceptions=True)

    results = asyncio.run(scenario())
    refused = [r for r in results if isinstance(r, OverloadedError)]
    assert peak == 3 and len(refused) == 12 - 5 and [r for r in results if isinstance(r, int)] == [0, 1, 2, 3, 4]


def test_reconfigure_changes_how_many_batches_run_at_once() -> None:
    """`max_concurrent_batches` (a model's config.yaml, Ray Serve `reconfigure`) applies from the next batch, up or
    down, while batches run."""
    running = 0
    peaks: list[int] = []

    async def slow(items: list[Queued[int]]) -> list[int | BaseException]:
        nonlocal running
        running += 1
        peaks[-1] = max(peaks[-1], running)
        await asyncio.sleep(0.02)
        running -= 1
        return [q.item for q in items]

    async def scenario() -> None:
        queue: BatchQueue[int, int] = BatchQueue(slow, 1, 0.0)
        for concurrency in (1, 3, 2, 1):
            queue.configure(max_batch_size=1, batch_wait_timeout_s=0.0, max_concurrent_batches=concurrency)
            peaks.append(0)
            assert await asyncio.gather(*(queue.submit(i) for i in range(6))) == list(range(6))

    asyncio.run(scenario())
    assert peaks == [1, 3, 2, 1]


def test_reconfigure_changes_the_next_batches_and_waiting_fills_them() -> None:
    sizes: list[int] = []

    async def record(items: list[Queued[int]]) -> list[int | BaseException]:
        sizes.append(len(items))
        return [q.item for q in items]

    async def scenario() -> None:
        queue: BatchQueue[int, int] = BatchQueue(record, 2, 0.0)
        await asyncio.gather(*(queue.submit(i) for i in range(4)))
        queue.configure(max_batch_size=8, batch_wait_timeout_s=0.05)
        first = asyncio.ensure_future(queue.submit(100))
        await asyncio.sleep(0.01)  # arrives while the first item waits for company
        await asyncio.gather(first, queue.submit(101))

    asyncio.run(scenario())
    assert sizes[:2] == [2, 2] and sizes[-1] == 2


def test_cancelled_callers_do_not_hold_queue_room() -> None:
    release = asyncio.Event()

    async def gated(items: list[Queued[int]]) -> list[int | BaseException]:
        await release.wait()
        return [q.item for q in items]

    async def scenario() -> tuple[int, list[int]]:
        queue: BatchQueue[int, int] = BatchQueue(gated, 1, 0.0, max_queued=3)
        running = asyncio.ensure_future(queue.submit(0))  # taken by the (blocked) first batch
        await asyncio.sleep(0.01)
        abandoned = [asyncio.ensure_future(queue.submit(i)) for i in (1, 2, 3)]  # the queue is now full
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await queue.submit(99)  # full of live callers: refused
        for task in abandoned[:2]:
            task.cancel()
        await asyncio.sleep(0)
        late = [asyncio.ensure_future(queue.submit(i)) for i in (4, 5)]  # room left by the two cancelled callers
        await asyncio.sleep(0.01)
        release.set()
        return await running, list(await asyncio.gather(abandoned[2], *late))

    first, rest = asyncio.run(scenario())
    assert first == 0 and rest == [3, 4, 5]
