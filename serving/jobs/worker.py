"""The batch-job loop (`serving.deployments.batch_worker.BatchWorker` runs it in the graph placement).

`JobLoop` builds the loop over an `InferenceService` (the same code path as `/v1/analyze`) and starts it
on the running event loop; it migrates the store (retrying while the database is down, without holding up the
rest of the application), requeues items that were in flight when the previous worker died, and resumes
unfinished jobs. In the local placement the Ingress replica runs it over its own in-process stages (no second
copy of the models); in the graph placement the `BatchWorker` deployment runs it over the stage deployments.
"""

import asyncio
import logging

import sqlalchemy as sa

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.erasure import drop_orphaned_objects, sweep
from serving.jobs.objects import ObjectStore
from serving.jobs.records import JobRecord
from serving.jobs.runner import AnalysisService, JobRunner
from serving.jobs.settings import JobSettings
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity, WorkerRegistry
from serving.security.settings import SecuritySettings
from serving.security.tenants import TenantStore

logger = logging.getLogger("imgserve.jobs")


class TenantSecrets:
    """The webhook signing secrets of a job's tenant (`imgserve tenants webhook-secret`), read for every delivery
    (a rotation takes effect at once; a cache kept signing with the replaced secret, and receivers refused those
    deliveries for good): its secret, and for a day after a rotation the replaced one too. A tenant without one
    signs with IMGSERVE_WEBHOOK_SECRET when that is set, else gets a secret made now."""

    def __init__(self, engine: sa.Engine, fallback: bytes | None):
        self.store, self.fallback = TenantStore(engine), fallback

    def __call__(self, job: JobRecord) -> tuple[bytes, ...]:
        own = self.store.signing_secrets(job.tenant)
        if own:
            return own
        return (self.fallback or self.store.webhook_secret(job.tenant) or b"",)


class JobLoop:
    """A started `JobRunner` and its task."""

    def __init__(
        self,
        service: AnalysisService,
        settings: JobSettings | None = None,
        security: SecuritySettings | None = None,
    ):
        self.settings = settings or JobSettings.from_env()
        self.security = security or SecuritySettings.from_env()
        engine = self.engine = create_store_engine(self.settings.database_url)
        queue = WorkQueue(engine, WorkerIdentity())
        self.objects = ObjectStore(self.settings.object_store)
        self.runner = JobRunner(
            queue,
            WorkerRegistry(engine),
            self.objects,
            service,
            self.settings,
            WebhookSender(queue, self.settings, secret_for=TenantSecrets(engine, self.settings.secret_bytes())),
            prepare=lambda: migrate(engine),
        )
        self.task = asyncio.get_running_loop().create_task(self.runner.run())
        self.sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        logger.info("batch job loop started: concurrency %d, store %s", self.settings.concurrency, engine.url)

    async def _sweep_forever(self) -> None:
        """Every sweep interval: drop orphaned objects (what refused or failed submissions stored; no job holds
        them), and with retention (IMGSERVE_RETENTION_DAYS) purge expired jobs first."""
        days = self.security.retention_days
        while True:
            try:
                if self.runner.ready and days is not None:
                    await asyncio.to_thread(sweep, self.engine, self.objects, days * 86400.0)
                elif self.runner.ready:
                    dropped = await asyncio.to_thread(drop_orphaned_objects, self.engine, self.objects)
                    if dropped:
                        logger.info("sweep: %d stored objects no job holds were deleted", dropped)
            except Exception:  # noqa: BLE001 - the next sweep tries again
                logger.exception("retention sweep failed")
            await asyncio.sleep(self.security.retention_sweep_s)

    async def wake(self, job_id: str | None = None) -> None:
        """A job was submitted or cancelled: look at the store now."""
        self.runner.wake()

    def check_health(self, restart_on_store_outage: bool = False) -> None:
        """Raises (Ray restarts the replica) when the loop has died, or, with `restart_on_store_outage`, when the
        job store has failed for longer than IMGSERVE_BATCH_UNHEALTHY_AFTER_S. The local placement's Ingress passes
        False: restarting it would take online serving down for an outage online serving does not depend on."""
        for task in (self.task, *self.runner.background):
            if task.done():
                raise RuntimeError(f"batch loop ended: {task.exception() if not task.cancelled() else 'cancelled'}")
        down_for = self.runner.store.down_for()
        if restart_on_store_outage and down_for > self.settings.unhealthy_after_s:
            raise RuntimeError(f"job store unavailable for {down_for:.0f}s")

    async def stop(self) -> None:
        """The replica is stopping: end the loop and hand this worker's in-flight items back at once."""
        for task in (self.task, self.sweeper):
            if task is not None:
                task.cancel()
        try:
            await self.runner.retire()
        except Exception:  # noqa: BLE001 - store down: the next worker requeues them once this one is stale
            logger.warning("could not release this worker's items; they are requeued when it is seen dead")
