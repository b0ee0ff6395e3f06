"""The batch-job loop (`serving.deployments.batch_worker.BatchWorker` runs it in the graph placement).

`JobLoop` builds the loop over an `InferenceService` (the same code path as `/v1/analyze`) and starts it
on the running event loop; it migrates the store (retrying while the database is down, without holding up the
rest of the application), requeues items that were in flight when the previous worker died, and resumes
unfinished jobs. In the local placement the Ingress replica runs it over its own in-process stages (no second
copy of the models); in the graph placement the `BatchWorker` deployment runs it over the stage deployments.
"""

import asyncio
import logging

from serving.jobs.database import create_store_engine, migrate
from serving.jobs.objects import ObjectStore
from serving.jobs.runner import AnalysisService, JobRunner
from serving.jobs.settings import JobSettings
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue

logger = logging.getLogger("imgserve.jobs")


class JobLoop:
    """A started `JobRunner` and its task."""

    def __init__(self, service: AnalysisService, settings: JobSettings | None = None):
        self.settings = settings or JobSettings.from_env()
        engine = create_store_engine(self.settings.database_url)
        queue = WorkQueue(engine)
        self.runner = JobRunner(
            queue,
            ObjectStore(self.settings.object_store),
            service,
            self.settings,
            WebhookSender(queue, self.settings),
            prepare=lambda: migrate(engine),
        )
        self.task = asyncio.get_running_loop().create_task(self.runner.run())
        logger.info("batch job loop started: concurrency %d, store %s", self.settings.concurrency, engine.url)

    async def wake(self, job_id: str | None = None) -> None:
        """A job was submitted or cancelled: look at the store now."""
        self.runner.wake()

    def check_health(self) -> None:
        if self.task.done():
            raise RuntimeError(
                f"batch loop ended: {self.task.exception() if not self.task.cancelled() else 'cancelled'}"
            )
