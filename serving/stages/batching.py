"""Dynamic batching by contract: callers submit one item, a worker runs lists, each caller gets its own result.

The same queue batches a model's tensors (`ModelStage`) and, in the graph placement, the images an Ingress
replica sends to another stage in one actor call (`GraphPipeline`). The batch function takes a list and must
return a list of the same length (checked); an element that is an exception fails only its own caller.
By default batches run one at a time: while one executes, the next fills (Ray Serve's `@serve.batch` does the
same); `max_concurrent_batches` lets several run at once (a batch that is mostly waiting on other processes, a
model run on one thread per core), and `configure` changes it at runtime: the next batch starts under the new
bound.
"""

import asyncio
import contextvars
import copy
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from serving.errors import OverloadedError

if TYPE_CHECKING:
    from prometheus_client import Gauge

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Queued(Generic[T]):
    """One submitted item, when it was queued (perf_counter seconds) and by when (time.monotonic()) its batch must
    start, None for no deadline."""

    item: T
    enqueued: float
    deadline: float | None = None


_CLOSED = object()  # queued by `BatchQueue.close`


class BatchQueue(Generic[T, R]):
    """`await queue.submit(item)` -> that item's result, computed in a batch with concurrent submitters."""

    def __init__(
        self,
        run_batch: Callable[[list[Queued[T]]], Awaitable[list[R | BaseException]]],
        max_batch_size: int,
        batch_wait_timeout_s: float,
        max_concurrent_batches: int = 1,
        max_queued: int | None = None,
        depth: "Gauge | None" = None,
    ):
        """`max_queued`: items that may wait for a batch; one more is refused with `OverloadedError` (503 /
        RESOURCE_EXHAUSTED), the way a deployment's `max_queued_requests` sheds load. None: unbounded.
        `depth`: a gauge (one labelled child) that counts the items waiting for a batch, up as one is queued and
        down as a batch takes it or it is dropped (`imgserve_batch_queue_depth`)."""
        self._depth = depth
        self._run_batch = run_batch
        self.max_concurrent_batches = max_concurrent_batches
        self.max_queued = max_queued
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self._queue: asyncio.Queue[tuple[Queued[T], asyncio.Future[R]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    def configure(
        self, max_batch_size: int, batch_wait_timeout_s: float, max_concurrent_batches: int | None = None
    ) -> None:
        """Change the batching at runtime (Ray Serve `reconfigure`); the next batch uses the new values."""
        self.max_batch_size, self.batch_wait_timeout_s = max_batch_size, batch_wait_timeout_s
        if max_concurrent_batches is not None:
            self.max_concurrent_batches = max_concurrent_batches

    async def submit(self, item: T, deadline: float | None = None) -> R:
        """The item's result; `deadline` (time.monotonic()): if no batch has taken it by then, `OverloadedError`
        (the request waited its whole queue budget: serving it late would only add to the overload)."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            # A fresh queue and worker per event loop; the worker runs in an empty context, so no request's
            # context variables (Ray's request context, the access log's) leak into other requests' batches.
            if self._queue is not None and self._worker is not None and self._worker.done():
                self._count_taken(self._discard(self._queue))  # nothing takes them any more
            self._queue = asyncio.Queue()
            work = self._work(self._queue)
            self._worker = loop.create_task(work, context=contextvars.Context())
        if self.max_queued is not None and self._queue.qsize() >= self.max_queued:  # type: ignore[union-attr]
            self._count_taken(self._drop_abandoned(self._queue))  # type: ignore[arg-type]
            if self._queue.qsize() >= self.max_queued:  # type: ignore[union-attr]
                raise OverloadedError(
                    f"server is overloaded: {self.max_queued} items already wait for a batch, retry later"
                )
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put_nowait((Queued(item, time.perf_counter(), deadline), future))  # type: ignore[union-attr]
        if self._depth is not None:
            self._depth.inc()
        if self._closed:  # a caller that held the stage before it was closed: served, then the worker ends
            self._queue.put_nowait(_CLOSED)  # type: ignore[union-attr, arg-type]
        return await future

    def close(self) -> None:
        """Nothing more is expected (a model stage swapped out): the worker batches what is queued, then ends,
        instead of waiting for ever and being destroyed pending when the stage is freed. A late submission (a
        request that held the stage) is still served."""
        self._closed = True
        if self._queue is not None and self._worker is not None and not self._worker.done():
            self._queue.put_nowait(_CLOSED)  # type: ignore[arg-type]

    def _count_taken(self, items: int) -> None:
        """`items` left the queue (taken into a batch, dropped): the depth gauge goes down by as many."""
        if self._depth is not None and items:
            self._depth.dec(items)

    @staticmethod
    def _discard(queue: "asyncio.Queue[tuple[Queued[T], asyncio.Future[R]]]") -> int:
        """Empty a queue no worker reads any more; the number of items (not close markers) it held."""
        items = 0
        while not queue.empty():
            items += queue.get_nowait() is not _CLOSED
        return items

    @staticmethod
    def _drop_abandoned(queue: "asyncio.Queue[tuple[Queued[T], asyncio.Future[R]]]") -> int:
        """Take out items whose callers gave up (a cancelled request: its future is cancelled). They would sit in
        the queue until a batch collects them and skips them, and meanwhile count against `max_queued`, refusing
        live requests while nothing is waiting. Order is kept. Runs only when the queue is at its bound. Returns
        how many were taken out."""
        live = []
        dropped = 0
        while not queue.empty():
            entry = queue.get_nowait()
            if entry is _CLOSED or not entry[1].cancelled():
                live.append(entry)
            else:
                dropped += 1
        for entry in live:
            queue.put_nowait(entry)
        return dropped

    async def _collect(self, queue: "asyncio.Queue[tuple[Queued[T], asyncio.Future[R]]]") -> list[Any] | None:
        """The next batch; None once closed with nothing left."""
        first = await queue.get()
        while first is _CLOSED:
            if queue.empty():
                return None
            first = queue.get_nowait()
        self._count_taken(1)
        batch = [first]
        deadline = time.perf_counter() + self.batch_wait_timeout_s
        while len(batch) < self.max_batch_size:
            if not queue.empty():
                item = queue.get_nowait()
            else:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if item is _CLOSED:  # after this batch
                queue.put_nowait(item)
                break
            batch.append(item)
            self._count_taken(1)
        return batch

    async def _work(self, queue: "asyncio.Queue[tuple[Queued[T], asyncio.Future[R]]]") -> None:
        running: set[asyncio.Task[None]] = set()  # this worker's batches (a worker of a closed loop left its own)
        self._running = running  # keeps a reference to each until it is done
        slot_freed = asyncio.Event()

        def finished(done: asyncio.Task[None]) -> None:
            running.discard(done)
            slot_freed.set()

        while True:
            while len(running) >= self.max_concurrent_batches:  # a free slot first: batches grow meanwhile
                slot_freed.clear()
                await slot_freed.wait()
            batch = await self._collect(queue)
            if batch is None:
                return
            task = asyncio.get_running_loop().create_task(self._run(batch))
            running.add(task)
            task.add_done_callback(finished)

    async def _run(self, batch: list[tuple[Queued[T], asyncio.Future[R]]]) -> None:
        now = time.monotonic()
        live = []
        for queued, future in batch:
            if future.cancelled():
                continue
            if queued.deadline is not None and now > queued.deadline:
                late = (now - queued.deadline) * 1000.0
                future.set_exception(OverloadedError(f"server is overloaded: queue budget exceeded by {late:.0f} ms"))
                continue
            live.append((queued, future))
        if not live:
            return
        try:
            results = await self._run_batch([queued for queued, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} inputs")
        except BaseException as exc:  # the whole batch failed: every caller gets its own copy of the error
            for _, future in live:
                if not future.done():
                    future.set_exception(copy.copy(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(live, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
