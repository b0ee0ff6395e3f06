"""Run awaitables concurrently, wait for every one, then raise the first failure in order (none left unretrieved);
and the stages' own threads.

Decode, model and quality/metadata calls run on `STAGE_THREADS`, not on the event loop's default executor: that one
also carries database calls (the job loop, key lookups, audit and rate-limit writes), and a stalled database
blocking all of its threads must not stall online inference. Their work is CPU-bound and releases the GIL, so the
pool is sized to the CPUs this process may use plus two (a thread each while model runs and decodes overlap):
Python's I/O default (CPUs + 4) let six threads contend for two cores and the GIL (3-4 % fewer images/s than
three or four threads on the web mix here).
"""

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from serving.cpus import usable_cpus

T = TypeVar("T")
STAGE_THREADS = ThreadPoolExecutor(max_workers=min(32, usable_cpus() + 2), thread_name_prefix="imgserve-stage")


async def stage_thread(fn: Callable[..., T], *args: Any) -> T:
    """`asyncio.to_thread` on the stages' own executor (context variables go along, as with to_thread)."""
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(STAGE_THREADS, call)


async def gather_or_raise(
    calls: Sequence[Awaitable[Any]], keep: tuple[type[BaseException], ...] = (), note_index: bool = False
) -> list[Any]:
    """Results in order. A failure that is a `keep` instance stays in its slot (a per-image error in a list
    answer); the first other failure is raised, with "image index i" noted when `note_index` and several ran."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for index, result in enumerate(results):
        if isinstance(result, BaseException) and not isinstance(result, keep):
            if note_index and len(results) > 1:
                result.add_note(f"image index {index}")
            raise result
    return list(results)


async def gather_all_or_cancel(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Results in order; at the first failure the calls still running are cancelled (and waited for) and that
    failure is raised: a request that fails as a whole (a client-batched tensor, one row refused 503 at a full batch
    queue) does not leave its other rows queued and run for nobody."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    if not tasks:  # asyncio.wait refuses an empty set
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # a no-op for those done; the caller's own cancellation cancels them all too
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]
