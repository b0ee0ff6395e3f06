"""The batch-job service of the ingress: validate options, take inputs in, write the job, wake the worker.

The job routes call this; the worker (`BatchWorker`) does the processing. The ingress writes the job and its
items to the store and then calls the worker's `wake` so it starts at once; the worker also polls the store,
so a lost wake-up (or a second ingress replica) only costs one poll interval.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from serving.errors import BadRequestError
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.errors import JobStoreUnavailableError
from serving.jobs.intake import InputPart, Intake
from serving.jobs.objects import ObjectStore
from serving.jobs.records import JobRecord, JobSpec, ResultRecord
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore

logger = logging.getLogger("imgserve.jobs")
STAGE_ALIASES = {"classify": "classification"}
DEFAULT_STAGES = ["classification"]  # bulk jobs run what is asked for; the classifier unless told otherwise


@dataclass(frozen=True)
class BatchOptions:
    model: str | None = None
    top_k: int = 5
    stages: list[str] | None = None
    webhook_url: str | None = None


class JobService:
    def __init__(self, inference: Any, settings: JobSettings, wake: Callable[[str], Awaitable[None]] | None = None):
        """`wake(job_id)`: tells the job loop there is work (the local loop, or the BatchWorker deployment)."""
        self.inference, self.settings, self._wake = inference, settings, wake
        self.engine = create_store_engine(settings.database_url)
        self.store = JobStore(self.engine, settings.max_items)
        self._objects: ObjectStore | None = None
        self._ready = asyncio.Lock()
        self._migrated = False

    async def ready(self) -> JobStore:
        """The store, migrated on first use (the worker migrates too; the migration itself is locked)."""
        if not self._migrated:
            async with self._ready:
                if not self._migrated:
                    try:
                        await asyncio.to_thread(migrate, self.engine)
                    except Exception as exc:  # noqa: BLE001 - any database failure is "not available now"
                        logger.exception("job store unavailable")
                        raise JobStoreUnavailableError(f"the job store is unavailable: {exc}") from None
                    self._migrated = True
        return self.store

    def _intake(self) -> Intake:
        if self._objects is None:
            self._objects = ObjectStore(self.settings.object_store)
        return Intake(self._objects, self.settings)

    def spec(self, options: BatchOptions) -> JobSpec:
        """The job's model and stages, checked now so a bad request is a 4xx and never a failed job."""
        entry = self.inference.served_entry(options.model)
        if options.top_k < 1:
            raise BadRequestError(f"top_k must be >= 1, got {options.top_k}")
        requested = options.stages or DEFAULT_STAGES
        names = [STAGE_ALIASES.get(n.strip(), n.strip()) for item in requested for n in item.split(",")]
        stages = tuple(self.inference.analysis_fields([n for n in names if n] or DEFAULT_STAGES))
        if "classification" in stages and entry.config.task != "classification":
            raise BadRequestError(f"model '{entry.name}' is a {entry.config.task} model, not a classifier")
        if options.webhook_url is not None:
            parts = urlsplit(options.webhook_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise BadRequestError(f"webhook_url must be an http(s) URL, got {options.webhook_url!r}")
        return JobSpec(entry.name, options.top_k, stages, options.webhook_url)

    async def submit(self, options: BatchOptions, parts: Sequence[InputPart], start: bool = True) -> JobRecord:
        spec = self.spec(options)
        store = await self.ready()
        items = await asyncio.to_thread(self._intake().items, parts)  # refused URIs: 4xx, nothing stored
        job_id = await asyncio.to_thread(store.create_job, spec, items, start)
        if start:
            await self.wake(job_id)
        return await asyncio.to_thread(store.get_job, job_id)

    async def add_items(self, job_id: str, parts: Sequence[InputPart]) -> JobRecord:
        store = await self.ready()
        await asyncio.to_thread(store.get_job, job_id)  # 404 before reading the inputs
        items = await asyncio.to_thread(self._intake().items, parts)
        await asyncio.to_thread(store.add_items, job_id, items)
        return await asyncio.to_thread(store.get_job, job_id)

    async def start(self, job_id: str) -> JobRecord:
        store = await self.ready()
        await asyncio.to_thread(store.start_job, job_id)
        await self.wake(job_id)
        return await asyncio.to_thread(store.get_job, job_id)

    async def cancel(self, job_id: str) -> JobRecord:
        store = await self.ready()
        job = await asyncio.to_thread(store.cancel_job, job_id)
        await self.wake(job_id)
        return job

    async def get(self, job_id: str) -> JobRecord:
        return await asyncio.to_thread((await self.ready()).get_job, job_id)

    async def list_jobs(self, status: str | None, limit: int, offset: int) -> list[JobRecord]:
        return await asyncio.to_thread((await self.ready()).list_jobs, status, limit, offset)

    async def results(self, job_id: str, after: int, limit: int, status: str | None) -> list[ResultRecord]:
        return await asyncio.to_thread((await self.ready()).results_page, job_id, after, limit, status)

    async def events(self, job_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        store = await self.ready()
        await asyncio.to_thread(store.get_job, job_id)
        return await asyncio.to_thread(store.events, job_id), await asyncio.to_thread(store.deliveries, [job_id])

    async def wake(self, job_id: str) -> None:
        """Tell the worker there is work; best effort (it polls the store anyway)."""
        if self._wake is None:
            return
        try:
            await asyncio.wait_for(self._wake(job_id), timeout=5)
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not wake the batch worker for job %s: %r", job_id, exc)
