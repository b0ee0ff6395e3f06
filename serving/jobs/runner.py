"""The batch worker's loop: take the next active job, run its items through the graph, record each once.

At most `concurrency` items are in flight at any time, whatever the job size, so a big job adds a bounded
load to the decode and model stages and online requests keep their latency. Items fail one by one (their
error is their result); a job fails as a whole only when its model is no longer served. Tenants share the loop
in turns (`run_job`, `WorkQueue.next_job`): one tenant's big job does not hold another's small one for hours.
An item of a job purged while it runs (here or from another replica) leaves nothing written after the purge: it
checks its job is there before writing its output, and removes what it wrote if its result finds the job gone.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from pipelines.convert.names import output_bases
from serving.errors import classify_error, internal_detail
from serving.image_ops import ImageOperations
from serving.jobs.erasure import drop_unrecorded_output
from serving.jobs.errors import ItemInputError, JobPurgedError, JobStoreUnavailableError
from serving.jobs.metrics import BATCH_DISPATCHES, BATCH_ITEM_LATENCY, BATCH_ITEMS, BATCH_JOBS
from serving.jobs.objects import ObjectStore, read_job_input
from serving.jobs.operations import run_operations
from serving.jobs.outage import StoreCalls
from serving.jobs.records import ClaimedItem, ItemOutput, JobRecord, Outcome
from serving.jobs.serialize import analysis_document
from serving.jobs.settings import JobSettings
from serving.jobs.uris import remove_named_output
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerRegistry
from serving.quality_metrics import record_quality
from serving.requests import ImageOptions
from serving.security.gate import CURRENT_PRINCIPAL
from serving.security.principal import Principal

logger = logging.getLogger("imgserve.jobs")
RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 10.0
# Error kinds an item is retried after: refused for load (not counted as a dispatch), or failed in a way that may be
# the item's doing (a crash, a replica that died under it): counted, so a poison item ends after max_attempts.
UNCOUNTED_RETRY_KINDS = frozenset({"overloaded"})
COUNTED_RETRY_KINDS = frozenset({"internal", "replica_unavailable", "store_unavailable"})
NAMED_JOBS_KEPT = 16  # jobs whose output names a loop keeps between their turns (the least recently named go first)


class AnalysisService(Protocol):
    """The part of `InferenceService` the worker uses (the same code path as `/v1/analyze`)."""

    thresholds: Any  # what its quality verdicts were given by (pipelines.quality.Thresholds)

    async def analyze(
        self, images: list[bytes], options: ImageOptions | None = None, count_quality: bool = True
    ) -> list[Any]: ...

    def served_entry(self, name: str | None) -> Any: ...


async def _wait(event: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        pass
    event.clear()


class JobRunner:
    def __init__(
        self,
        queue: WorkQueue,
        workers: WorkerRegistry,
        objects: ObjectStore,
        service: AnalysisService,
        settings: JobSettings,
        webhooks: WebhookSender,
        prepare: Callable[[], None] = lambda: None,
    ):
        self.queue, self.objects, self.service, self.settings = queue, objects, service, settings
        self.workers = workers
        assert queue.worker is not None, "the runner's queue claims for a registered worker"
        self.worker = queue.worker
        self.webhooks, self.prepare = webhooks, prepare
        self._work, self._webhook_work = asyncio.Event(), asyncio.Event()
        self._webhook_tasks: dict[str, asyncio.Task[bool]] = {}
        self.ready = False
        self.in_flight = 0
        self.store = StoreCalls()
        self.heartbeats = StoreCalls()
        self.background: list[asyncio.Task[None]] = []
        self.requeued: dict[str, int] = {}
        self._image_operations: ImageOperations | None = None
        # Jobs this loop marked running: one "started"/"resumed" event per job and loop, not one per turn (a job
        # taking turns with other tenants' jobs would fill its events with "resumed"). Cleared when the loop idles.
        self._joined: set[str] = set()
        # The output names of those jobs (`output_bases`, over all their items: fixed once a job is queued), named
        # once per job and loop, not at every turn (2 s for 100 000 items). Dropped with `_joined`.
        self._bases: dict[str, dict[int, str]] = {}

    def image_operations(self) -> ImageOperations:
        """Conversion/enhancement over this worker's service, with the server's decode limits (made on first use)."""
        if self._image_operations is None:
            from serving.config.settings import ServerSettings

            self._image_operations = ImageOperations(self.service, ServerSettings.from_env().decode_limits())  # type: ignore[arg-type]
        return self._image_operations

    def wake(self) -> None:
        """New work (a job submitted or cancelled): look now instead of at the next poll."""
        self._work.set()
        self._webhook_work.set()

    async def run(self) -> None:
        """Forever: migrate (retrying while the database is down), register, requeue dead workers' items, run jobs."""
        delay = 1.0
        while not self.ready:
            try:
                await self.store.durable(self.prepare)
                await self.store.durable(self.workers.heartbeat, self.worker)
                self.requeued = await self.store.durable(self._requeue_orphans)
                self.ready = True
            except Exception:  # noqa: BLE001 - not an outage (a migration or permission error): log, retry
                logger.exception("job store not ready; retrying in %.0fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        if self.requeued:
            logger.info("resuming: %d in-flight items of stopped workers requeued", sum(self.requeued.values()))
        self.background = [asyncio.create_task(self._webhook_loop()), asyncio.create_task(self._heartbeat_loop())]
        try:
            while True:
                await self._step()
        finally:
            for task in self.background:
                task.cancel()

    def _requeue_orphans(self) -> dict[str, int]:
        return self.queue.requeue_orphans(self.settings.max_attempts, self.settings.worker_stale_s)

    async def _heartbeat_loop(self) -> None:
        """Keep this worker alive in the store; now and then requeue the items of workers that died meanwhile.
        The heartbeat backs off on its own (`heartbeats`), not behind every item write that failed in an outage."""
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.heartbeats.durable(self.workers.heartbeat, self.worker)
                if time.monotonic() - last_sweep >= self.settings.worker_stale_s:
                    last_sweep = time.monotonic()
                    requeued = await self.heartbeats.durable(self._requeue_orphans)
                    if requeued:
                        logger.info("requeued %d items of stopped workers", sum(requeued.values()))
                        self.wake()
            except Exception:  # noqa: BLE001 - not an outage: the next beat tries again; the loop must not end
                logger.exception("worker heartbeat failed")

    async def retire(self) -> None:
        """A graceful stop: this worker's running items go back to pending at once (no wait for staleness)."""
        released = await asyncio.to_thread(self.workers.retire, self.worker)
        logger.info("batch worker %s retired; %d in-flight items released", self.worker.id, released)

    async def _step(self) -> None:
        try:
            job = await self.store.durable(self.queue.next_job)
            if job is None:  # idle: the jobs it joined have ended or run on other loops
                self._joined.clear()
                self._bases.clear()
                await _wait(self._work, self.settings.poll_interval_s)
                return
            await self.run_job(job)
        except Exception:  # noqa: BLE001 - a bug in one job must not end the loop
            logger.exception("batch loop error; retrying")
            await asyncio.sleep(self.settings.poll_interval_s)

    async def run_job(self, job: JobRecord) -> JobRecord | None:
        """One turn of `job`: its pending items, until `settings.items_per_turn()` are claimed and another tenant
        has work waiting (`WorkQueue.other_tenant_waiting`; checked at the end of each turn's worth, so a tenant
        alone runs on). Then it claims no more, lets the items in flight record their results, and returns, and the
        loop's next `next_job` picks whose turn it is. Returns the finished job (None if it was cancelled, or it has
        items left for a later turn)."""
        try:
            self.service.served_entry(job.model)
        except Exception as exc:  # noqa: BLE001 - unknown or unservable model: the whole job fails
            await self.store.durable(self.queue.fail_job, job.id, classify_error(exc).message)
            BATCH_JOBS.labels("failed").inc()
            self._webhook_work.set()
            return None
        if job.id not in self._joined:
            await self.store.durable(self.queue.mark_running, job.id)
            self._joined.add(job.id)
        # outputs that would share a name (IMG_1.HEIC and IMG_1.JPG -> IMG_1.webp) are named apart, over all items,
        # and below the folder they all share (one uploaded photos.zip writes 2024/a.webp, not photos.zip/2024/...)
        if job.operations and job.id not in self._bases:
            names = await self.store.durable(self.queue.item_names, job.id)
            while len(self._bases) >= NAMED_JOBS_KEPT:  # jobs cancelled meanwhile never finish here: bounded
                del self._bases[next(iter(self._bases))]
            self._bases[job.id] = await asyncio.to_thread(output_bases, names, below_shared_folder=True)
        bases = self._bases.get(job.id, {})
        limit = self.settings.concurrency
        running: dict[asyncio.Task[None], ClaimedItem | None] = {}  # None: the hand-back of an item whose task died
        claimed, turn_ends_at, turn_over = 0, self.settings.items_per_turn(), False
        try:
            while True:
                free = limit - len(running)
                # claim in chunks, not one by one; none once its turn is over
                if not turn_over and free > 0 and (not running or free >= max(1, limit // 2)):
                    for item in await self.store.durable(self.queue.claim, job.id, free):
                        task = asyncio.create_task(self._process(job, item, bases.get(item.idx, item.name)))
                        running[task] = item
                        claimed += 1
                    if claimed >= turn_ends_at:  # its turn is up: it goes on only if no other tenant is waiting
                        turn_over = await self.store.durable(self.queue.other_tenant_waiting, job.tenant)
                        turn_ends_at = claimed + self.settings.items_per_turn()
                if not running:
                    break
                self.in_flight = len(running)
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    item = running.pop(task)
                    error = None if task.cancelled() else task.exception()
                    if error is not None and item is not None:  # a bug: the item must not stay running
                        running[asyncio.create_task(self._item_died(job, item, error))] = None  # the loop goes on
                    elif error is not None:
                        logger.error("job %s: handing an item back failed: %r", job.id, error)
        finally:
            for task in running:  # the loop is stopping (replica shutdown): its items are handed back, not written
                task.cancel()
            self.in_flight = 0
        if await self.store.durable(self.queue.release_unheld, job.id):  # a lost claim's: they run in a later turn
            logger.warning("job %s: items of a claim whose answer was lost were handed back", job.id)
        finished = await self.store.durable(self.queue.finish_if_done, job.id)
        if finished:
            self._joined.discard(job.id)
            self._bases.pop(job.id, None)
            BATCH_JOBS.labels(finished.status).inc()
            logger.info("job %s %s: %s", job.id, finished.status, finished.counts)
        elif turn_over:
            logger.debug("job %s: its turn is over after %d items; another tenant has work waiting", job.id, claimed)
        elif not claimed:  # its items are running on another loop (or were cancelled): look again at the next poll
            await _wait(self._work, self.settings.poll_interval_s)
        self._webhook_work.set()
        return finished

    async def _item_died(self, job: JobRecord, item: ClaimedItem, error: BaseException | None) -> None:
        """An item whose task raised (not its result: even a failed result could not be stored) is handed back after
        a delay, and given up (failed, without a result row) at the job's attempt limit, instead of staying running
        under a live worker, its job never finishing."""
        given_up = item.attempts >= self.settings.max_attempts
        logger.error("item %d of job %s: %r; %s", item.idx, job.id, error, "given up" if given_up else "handed back")
        if given_up:
            await self.store.durable(self.queue.give_up, item, f"could not be processed or recorded: {error!r}"[:500])
            return
        await self._hand_back(item)

    async def _hand_back(self, item: ClaimedItem, counted: bool = True) -> None:
        """The item back to pending after a delay that grows with its attempts (`WorkQueue.release`)."""
        await asyncio.sleep(min(RETRY_DELAY_S * item.attempts, MAX_RETRY_DELAY_S))
        await self.store.durable(self.queue.release, item, counted)

    async def _load(self, job: JobRecord, item: ClaimedItem) -> bytes:
        root, limit, remote = (
            self.settings.read_root(job.tenant),
            self.settings.max_image_bytes,
            self.settings.remote_access(job.tenant),
        )
        return await asyncio.to_thread(read_job_input, item.source_kind, item.source, self.objects, root, limit, remote)

    async def _process(self, job: JobRecord, item: ClaimedItem, output_base: str) -> None:
        """Run one item and record its result; `output_base`: the name its output is named after."""
        start = time.perf_counter()
        BATCH_DISPATCHES.inc()
        analysis: Any = None  # the item's `serving.service.Analysis`
        try:
            data = await self._load(job, item)
            options = ImageOptions.parse(
                model=job.model, top_k=job.top_k, fields=list(job.stages), anonymize=job.anonymize or None
            )
            # The job's tenant is the caller while its items run (quality metrics, forced anonymisation); its images
            # were charged to the submitter's quota at submission.
            CURRENT_PRINCIPAL.set(Principal(key_id=None, tenant=job.tenant, role="analyst", source="job"))
            if job.stages:  # its quality verdict is counted once the item's result is recorded done (below)
                analysis = (await self.service.analyze([data], options, count_quality=False))[0]
            document = analysis_document(analysis) if analysis is not None else {}
            output = None
            if job.operations:
                document["output"], output = await run_operations(
                    self.image_operations(),
                    self.objects,
                    job.operations,
                    data,
                    output_base,
                    job.anonymize,
                    self.settings.write_root(job.tenant),
                    self.settings.remote_access(job.tenant),
                    partial(self._ensure_not_purged, item),
                )
            outcome = Outcome("done", job.model, document, output=output)
        except JobPurgedError:
            logger.info("item %d of job %s: the job was purged while the item ran; nothing written", item.idx, job.id)
            return
        except ItemInputError as exc:
            outcome = Outcome("failed", job.model, error_kind=exc.kind, error=exc.message)
        except Exception as exc:  # noqa: BLE001 - every error becomes this item's result, or a retry
            info = classify_error(exc)
            uncounted = info.kind in UNCOUNTED_RETRY_KINDS  # the item never really ran
            if uncounted or (info.kind in COUNTED_RETRY_KINDS and item.attempts < self.settings.max_attempts):
                logger.warning("item %d of job %s: %s; retrying", item.idx, job.id, internal_detail(exc))
                await self._hand_back(item, not uncounted)
                return
            if info.kind == "internal":
                logger.error("item %d of job %s failed: %s", item.idx, job.id, internal_detail(exc))
            outcome = Outcome("failed", job.model, error_kind=info.kind, error=info.message)
        elapsed = time.perf_counter() - start
        outcome = Outcome(**{**outcome.__dict__, "duration_ms": elapsed * 1000.0})
        # Held until the store takes it: an outage delays the write, never loses it or runs the item again.
        try:
            recorded = await self.store.durable(self.queue.record, item, outcome)
        except JobStoreUnavailableError as exc:  # the object store did not confirm the result's objects in time
            if item.attempts < self.settings.max_attempts:  # not recorded: run again, recorded once
                logger.warning("item %d of job %s: %s; retrying", item.idx, job.id, exc)
                await self._hand_back(item)
                return
            kind = "unwritable_output" if outcome.output is not None else "store_unavailable"
            outcome = Outcome("failed", job.model, error_kind=kind, error=str(exc), duration_ms=outcome.duration_ms)
            recorded = await self.store.durable(self.queue.record, item, outcome)
        except Exception as exc:  # noqa: BLE001 - not an outage: the store refused this result (a value it cannot hold)
            detail = internal_detail(exc)
            logger.error("item %d of job %s: its result could not be stored: %s", item.idx, job.id, detail)
            outcome = Outcome(
                "failed", job.model, error_kind="internal", error="the item's result could not be stored",
                duration_ms=outcome.duration_ms,
            )  # fmt: skip
            recorded = await self.store.durable(self.queue.record, item, outcome)
        if not recorded and outcome.output is not None and not await self.store.durable(self.queue.item_exists, item):
            await self._discard_output(job, item, outcome.output)
            return
        BATCH_ITEMS.labels(outcome.status).inc()
        BATCH_ITEM_LATENCY.observe(elapsed)
        if recorded and outcome.status == "done" and analysis is not None and analysis.quality is not None:
            # not before: a conversion failing after the analysis (a failed item is sent again) or a retried item
            # counted its verdict each time
            record_quality(analysis.quality, self.service.thresholds)

    async def _ensure_not_purged(self, item: ClaimedItem) -> None:
        """Raises JobPurgedError once the item's job is gone: checked before its output is written anywhere."""
        if not await self.store.durable(self.queue.item_exists, item):
            raise JobPurgedError(f"job {item.job_id} was purged")

    async def _discard_output(self, job: JobRecord, item: ClaimedItem, output: ItemOutput) -> None:
        """What an item wrote before its result found its job purged (a purge from any replica, after the item's
        `_ensure_not_purged`): its file at the job's destination (if still its bytes) and the stored output (if no row
        references it). An item re-run after its result was recorded keeps its output: its item is there."""
        destination = (job.operations or {}).get("destination")
        write_root, remote = self.settings.write_root(job.tenant), self.settings.remote_access(job.tenant)
        try:
            removed = bool(destination) and await asyncio.to_thread(
                remove_named_output, destination, output.name, output.object, write_root, remote
            )
            await self.store.durable(drop_unrecorded_output, self.queue.engine, self.objects, output.object)
        except Exception:  # noqa: BLE001 - the stored output is an orphan the sweep drops within the hour
            logger.exception("item %d of job %s: removing the output of the purged job failed", item.idx, job.id)
            return
        logger.info(
            "item %d of job %s: its job was purged meanwhile; output removed (at the destination: %s)",
            item.idx,
            job.id,
            removed,
        )

    async def _webhook_loop(self) -> None:
        while True:
            try:
                for job in await self.store.durable(self.queue.pending_webhooks):
                    task = self._webhook_tasks.get(job.id)
                    if task is None or task.done():
                        self._webhook_tasks[job.id] = asyncio.create_task(self.webhooks.deliver(job))
            except Exception:  # noqa: BLE001
                logger.exception("webhook loop error")
            for job_id, task in list(self._webhook_tasks.items()):
                if task.done():
                    del self._webhook_tasks[job_id]
                    if not task.cancelled() and task.exception():
                        logger.error("webhook delivery for job %s failed: %r", job_id, task.exception())
            await _wait(self._webhook_work, self.settings.poll_interval_s)
