"""`BatchWorker`: the graph placement's deployment for the batch-job loop (one replica), over the stage deployments.

In the local placement there is no such deployment: the Ingress replica runs the same `JobLoop` itself.
"""

from typing import Any

from ray import serve

from serving.jobs.worker import JobLoop
from serving.placement import IngressConfig, build_service
from serving.placement.graph import GraphStages


class BatchWorker:
    def __init__(self, config: IngressConfig, stages: GraphStages):
        """`config`: the application's `IngressConfig`; `stages`: the `GraphStages` handles (serving.app)."""
        self.loop = JobLoop(build_service(config, stages))

    async def wake(self, job_id: str | None = None) -> None:
        await self.loop.wake(job_id)

    async def stats(self) -> dict[str, Any]:
        runner = self.loop.runner
        return {
            "ready": runner.ready,
            "in_flight": runner.in_flight,
            "requeued": runner.requeued,
            "worker_id": runner.worker.id,
            "store_down_s": runner.store.down_for(),
        }

    def check_health(self) -> None:
        """Serve restarts the replica if the job loop has died or the job store has been down too long."""
        self.loop.check_health(restart_on_store_outage=True)

    async def __del__(self) -> None:
        await self.loop.stop()


# The class stays importable under its own name so Ray pickles it by reference, not by value.
BatchWorkerDeployment = serve.deployment(name="BatchWorker", num_replicas=1, max_ongoing_requests=64)(BatchWorker)
