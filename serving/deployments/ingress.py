"""The Ingress deployment: the HTTP app and the gRPC methods over one service, built in the replica."""

import asyncio
import logging
from typing import Any

from fastapi import FastAPI
from ray import serve

from serving import access_log
from serving.admission import REPLICA_LIMIT
from serving.deployments.direct_ingress import DirectListeners
from serving.deployments.ingress_start import audit_start_without_auth, ingress_gate
from serving.grpc.image_methods import ImageGrpcMethods
from serving.grpc.oip_methods import OipGrpcMethods
from serving.grpc.proxy_services import grpc_endpoints, quiet_stream_statuses
from serving.http.app import create_http_app, http_endpoints
from serving.http.host_guard import LoopbackHostGuard
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.jobs.worker import JobLoop
from serving.metrics import zero_server_errors
from serving.model_poll import ModelPoller
from serving.placement import IngressConfig, build_service
from serving.security.gate import set_replica_gate

logger = logging.getLogger("imgserve.ingress")


class Ingress(OipGrpcMethods, ImageGrpcMethods):
    """HTTP routes come from the FastAPI app built here; gRPC methods (named as the RPCs) from the two mixins (each
    guarded: serving.grpc.malformed)."""

    async def __init__(self, config: IngressConfig, stages: Any = None, batch_worker: Any = None):
        """`stages`: the graph's stage handles, or None to run every stage in this replica (placement local).
        `batch_worker`: the graph's BatchWorker handle; in the local placement the job loop runs here."""
        settings = config.settings
        quiet_stream_statuses()
        self.service = build_service(config, stages)
        self.gate = await asyncio.to_thread(ingress_gate, config)
        self.start_audit = audit_start_without_auth(config, self.gate)
        set_replica_gate(self.gate)
        self.service.gate = self.gate
        self.job_loop: JobLoop | None = None
        jobs = None
        if config.batch_jobs:
            if batch_worker is not None:
                wake = lambda job_id: batch_worker.wake.remote(job_id)  # noqa: E731
                jobs = JobService(self.service, JobSettings.from_env(), wake, self.gate)
            else:  # local: the loop runs over this replica's stages, no second copy of the models
                self.job_loop = JobLoop(self.service)
                jobs = JobService(self.service, self.job_loop.settings, self.job_loop.wake, self.gate)
        self.http_app: FastAPI = create_http_app(self.service, jobs, settings, self.gate)
        zero_server_errors([*http_endpoints(self.http_app), *grpc_endpoints(), "(admission)"])
        self.image_operations = self.http_app.state.image_operations
        self.max_message_bytes = settings.max_request_bytes  # the gRPC listeners' send limit (serving/server.py)
        self._training_resume: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference
        if self.http_app.state.training is not None:  # jobs a stopped server left unfinished run again
            self._training_resume = asyncio.get_running_loop().create_task(self.http_app.state.training.resume())
        self.model_poller: ModelPoller | None = None
        if stages is None and settings.model_poll_s > 0:  # local placement: the models live in this replica
            self.model_poller = ModelPoller(self.service, settings, settings.model_poll_s)
            await self.model_poller.start()
        self.direct_listeners: DirectListeners | None = None
        if config.direct_ingress is not None:
            REPLICA_LIMIT.limit = config.direct_ingress.max_inflight
            wait_ms = config.direct_ingress.max_queue_wait_ms
            REPLICA_LIMIT.max_queue_wait_s = wait_ms / 1000.0 if wait_ms is not None else None
            self.direct_listeners = DirectListeners(
                config.direct_ingress, settings.max_request_bytes, settings.header_read_timeout_s
            )
            # With auth off, only requests addressed to a loopback name (DNS rebinding, cross-site posts)
            http_app = (
                self.http_app
                if self.gate.required
                else LoopbackHostGuard(self.http_app, self.gate.settings.allowed_hosts, self.gate.settings.cors_origins)
            )
            await self.direct_listeners.start(self, http_app)
        logger.info(
            "ingress ready: placement %s, models %s, auth %s",
            config.placement,
            self.service.pipeline.model_names,
            self.gate.mode,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Ray Serve asks for the HTTP app after the constructor: the one this replica built."""
        return self.http_app

    def check_health(self) -> None:
        if self.job_loop is not None:
            self.job_loop.check_health()

    async def __del__(self) -> None:
        """Ray Serve calls this when the replica stops: close the direct listeners, finishing what is in flight."""
        if getattr(self, "direct_listeners", None) is not None:
            await self.direct_listeners.stop()  # type: ignore[union-attr]
        if getattr(self, "job_loop", None) is not None:
            await self.job_loop.stop()  # type: ignore[union-attr]
        if getattr(self, "model_poller", None) is not None:
            await self.model_poller.stop()  # type: ignore[union-attr]
        if getattr(self, "start_audit", None) is not None:
            self.start_audit.cancel()  # type: ignore[union-attr]
        gate = getattr(self, "gate", None)  # audit entries and image counts still in memory: written, not lost
        for pending in (getattr(gate, "audit_writer", None), getattr(gate, "usage", None)):
            if pending is not None:
                await pending.flush()
        access_log.flush()  # the last requests' lines (written a fraction of a second late: serving.access_log)


IngressDeployment = serve.deployment(name="Ingress", max_ongoing_requests=256)(serve.ingress()(Ingress))
