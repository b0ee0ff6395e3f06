"""`BatchWorker`: the Ray Serve deployment that runs batch jobs through the same graph as online requests.

One replica. Its constructor builds the same `InferenceService` the ingress uses (over the same decoder
and model handles) and starts the job loop on the replica's event loop; the loop migrates the store
(retrying while the database is down, without holding up the rest of the application), requeues items
that were in flight when the previous worker died, and resumes unfinished jobs.
"""

import asyncio
import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.config.settings import ServerSettings
from serving.deployments.in_process import InProcessStages
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.objects import ObjectStore
from serving.jobs.runner import JobRunner
from serving.jobs.settings import JobSettings
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue
from serving.repository import ModelRepository
from serving.service import InferenceService

logger = logging.getLogger("imgserve.jobs")


class BatchWorker:
    def __init__(
        self,
        decoder: DeploymentHandle | None,
        models: dict[str, DeploymentHandle],
        default_model: str,
        metadata: DeploymentHandle | None = None,
        quality: DeploymentHandle | None = None,
        in_process: InProcessStages | None = None,
    ):
        server = ServerSettings.from_env()
        self.settings = JobSettings.from_env()
        repository = ModelRepository.scan(server)
        if in_process is not None:  # model_location: ingress: this replica holds its own model copies too
            decoder, models = in_process.build()  # type: ignore[assignment]
        service = InferenceService(
            repository,
            decoder,  # type: ignore[arg-type]
            models,
            default_model,
            metadata=metadata,
            quality=quality,
            decode_in_model=in_process is not None,
        )
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
        # Serve calls a sync constructor on the replica's event loop, so the loop can be started here.
        self._task = asyncio.get_running_loop().create_task(self.runner.run())
        logger.info("batch worker started: concurrency %d, store %s", self.settings.concurrency, engine.url)

    async def wake(self, job_id: str | None = None) -> None:
        """A job was submitted or cancelled: look at the store now."""
        self.runner.wake()

    async def stats(self) -> dict[str, Any]:
        return {"ready": self.runner.ready, "in_flight": self.runner.in_flight, "requeued": self.runner.requeued}

    def check_health(self) -> None:
        """Serve restarts the replica if the job loop has died."""
        if self._task.done():
            raise RuntimeError(
                f"batch loop ended: {self._task.exception() if not self._task.cancelled() else 'cancelled'}"
            )


# The class stays importable under its own name so Ray pickles it by reference, not by value.
BatchWorkerDeployment = serve.deployment(name="BatchWorker", num_replicas=1, max_ongoing_requests=64)(BatchWorker)
