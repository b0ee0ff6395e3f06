"""Job-store outages as the batch worker lives through them: back off (no hot loop), know how long it has lasted.

Every store call of the worker goes through `StoreCalls.durable`: a failure waits 0.5 s, 1 s, 2 s ... up to
`MAX_DELAY_S` and tries again, so a result computed while PostgreSQL is down is held and written once it is back
(exactly once: the result row is unique per item). `down_for()` lets the health check report a long outage.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

from serving.jobs.metrics import batch_store_up

logger = logging.getLogger("imgserve.jobs")
T = TypeVar("T")
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
# A store that cannot be reached or answered (refused/dropped connections, SQLite busy or I/O errors, disk full).
STORE_ERRORS: tuple[type[BaseException], ...] = (sa.exc.OperationalError, sa.exc.InterfaceError, OSError)


class StoreCalls:
    """The worker's store calls, retried with shared exponential backoff while the store is down. `gauge`: whether
    they report `imgserve_batch_store_up` (the batch worker's do; a training job's last writes only retry)."""

    def __init__(self, gauge: bool = True) -> None:
        self.failures = 0
        self._since: float | None = None
        self.gauge = gauge
        if gauge:
            batch_store_up().set(1)

    def down_for(self) -> float:
        """Seconds since the first failure of the current outage (0 when the store answers)."""
        return 0.0 if self._since is None else time.monotonic() - self._since

    def failed(self, exc: BaseException) -> float:
        """Note a failure; returns how long to wait before the next try."""
        if self._since is None:
            self._since = time.monotonic()
            logger.warning("job store unavailable (%s: %.300s); retrying with backoff", type(exc).__name__, exc)
            if self.gauge:
                batch_store_up().set(0)
        self.failures += 1
        return min(FIRST_DELAY_S * 2 ** min(self.failures - 1, 16), MAX_DELAY_S)

    def succeeded(self) -> None:
        if self._since is not None:
            logger.warning("job store back after %.1fs", self.down_for())
            if self.gauge:
                batch_store_up().set(1)
        self._since, self.failures = None, 0

    async def durable(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a thread, retried until the store answers."""
        while True:
            try:
                result = await asyncio.to_thread(fn, *args)
            except STORE_ERRORS as exc:
                await asyncio.sleep(self.failed(exc))
                continue
            self.succeeded()
            return result
