"""A training job's run as the replica holds it: the claim kept alive by a heartbeat for as long as the job runs (a
head fit on many categories takes far longer than `RUNNER_STALE_S`, and another replica must not take a live job
over), and the fit stopped within a step once the job is cancelled or its claim is lost."""

import asyncio
import logging
import threading
from types import TracebackType

import numpy as np

from serving.trained_head import ClassifierHead
from serving.training import store as training_store
from serving.training.softmax import FitStoppedError, train_head
from serving.training.store import TrainingStore

logger = logging.getLogger("imgserve.training")
HEARTBEAT_S = 5.0  # at most this long between heartbeats (and before a cancel during the fit is seen)
RAY_POLL_S = 0.5  # how often a fit running as a Ray task is checked for a stop


def heartbeat_interval() -> float:
    """Seconds between heartbeats: HEARTBEAT_S, and well within the stale limit whatever it is set to."""
    return min(HEARTBEAT_S, training_store.RUNNER_STALE_S / 4)


class JobLease:
    """`async with JobLease(store, job_id, claim) as lease:` while the runner works on the job: its heartbeat is
    written every `heartbeat_interval()` s, and `lost` is set once the job is no longer this runner's (cancelled,
    or taken over): the fit checks it between steps."""

    def __init__(self, store: TrainingStore, job_id: str, claim: float):
        self.store, self.job_id, self.claim = store, job_id, claim
        self.lost = threading.Event()
        self._beating: asyncio.Task[None] | None = None

    async def holds(self) -> bool:
        """True while this runner still runs the job (writes a heartbeat too); False sets `lost`."""
        if not self.lost.is_set() and not await asyncio.to_thread(self.store.heartbeat, self.job_id, self.claim):
            self.lost.set()
        return not self.lost.is_set()

    async def _beat(self) -> None:
        while not self.lost.is_set():
            await asyncio.sleep(heartbeat_interval())
            try:
                await self.holds()
            except Exception:  # noqa: BLE001 - the store is down for now: keep working, the next beat tries again
                logger.warning("training job %s: heartbeat failed", self.job_id, exc_info=True)

    async def __aenter__(self) -> "JobLease":
        self._beating = asyncio.get_running_loop().create_task(self._beat())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)


async def fit_on_ray(
    x: np.ndarray, y: np.ndarray, labels: list[str], stop: threading.Event | None = None
) -> tuple[ClassifierHead, float]:
    """`train_head` as a Ray task when Ray runs here (a CPU worker, off the serving replica), else in a thread.
    Raises `FitStoppedError` soon after `stop` is set: the thread checks it between steps, the Ray task is
    cancelled."""
    import ray

    stop = stop or threading.Event()
    if not ray.is_initialized():
        return await asyncio.to_thread(train_head, x, y, labels, stop.is_set)
    ref = ray.remote(num_cpus=1)(train_head).remote(x, y, labels)
    pending = asyncio.wrap_future(ref.future())
    while not stop.is_set():
        done, _ = await asyncio.wait({pending}, timeout=RAY_POLL_S)
        if done:
            return pending.result()
    pending.cancel()
    # force: the worker is killed. A plain cancel raises KeyboardInterrupt in it through SIGINT, which a server
    # started in the background of a script ignores (and every Ray process inherits that): the fit ran to its end,
    # a CPU busy for nothing while the next job started.
    ray.cancel(ref, force=True)
    raise FitStoppedError("the fit was stopped: the job was cancelled or another runner took it over")
