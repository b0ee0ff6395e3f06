"""The ingress deployment: the FastAPI app (HTTP) and the gRPC methods, over one shared service layer."""

import logging

from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.admission import REPLICA_LIMIT
from serving.config.app_args import DirectIngressOptions
from serving.config.settings import ServerSettings
from serving.deployments.direct_ingress import DirectListeners
from serving.deployments.in_process import InProcessStages
from serving.grpc.image_methods import ImageGrpcMethods
from serving.grpc.oip_methods import OipGrpcMethods
from serving.http.app import create_http_app
from serving.http.job_routes import set_job_service
from serving.http.state import set_service
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.repository import ModelRepository
from serving.service import InferenceService

logger = logging.getLogger("imgserve.ingress")
http_app = create_http_app()


class Ingress(OipGrpcMethods, ImageGrpcMethods):
    """HTTP routes come from the FastAPI app; gRPC methods (named as the RPCs) from the two mixins."""

    async def __init__(
        self,
        decoder: DeploymentHandle | None,
        models: dict[str, DeploymentHandle],
        default_model: str,
        metadata: DeploymentHandle | None = None,
        batch_worker: DeploymentHandle | None = None,
        decode_in_model: bool = False,
        quality: DeploymentHandle | None = None,
        in_process: InProcessStages | None = None,
        direct_ingress: DirectIngressOptions | None = None,
    ):
        """`in_process` (model_location: ingress): build the decoder and models here instead of calling
        deployments; classification then never leaves this replica. `direct_ingress`: also listen for HTTP and
        gRPC clients here (serving.deployments.direct_ingress), so they skip Ray Serve's proxy."""
        settings = ServerSettings.from_env()
        repository = ModelRepository.scan(settings)
        if in_process is not None:
            decoder, models = in_process.build()  # type: ignore[assignment]
            decode_in_model = True
        self.service = InferenceService(
            repository,
            decoder,  # type: ignore[arg-type]
            models,
            default_model,
            settings.max_images_per_request,
            metadata=metadata,
            decode_in_model=decode_in_model,
            quality=quality,
        )
        set_service(self.service, settings)
        # Batch jobs (/v1/batch, /v1/jobs) when the application has a BatchWorker.
        set_job_service(JobService(self.service, JobSettings.from_env(), batch_worker) if batch_worker else None)
        self.direct_listeners: DirectListeners | None = None
        if direct_ingress is not None:
            REPLICA_LIMIT.limit = direct_ingress.max_inflight
            self.direct_listeners = DirectListeners(direct_ingress, settings.max_request_bytes)
            await self.direct_listeners.start(self, http_app)
        logger.info("ingress ready: models %s, default %s", sorted(models), default_model)

    async def __del__(self) -> None:
        """Ray Serve calls this when the replica stops: close the direct listeners, finishing what is in flight."""
        if getattr(self, "direct_listeners", None) is not None:
            await self.direct_listeners.stop()  # type: ignore[union-attr]


IngressDeployment = serve.deployment(name="Ingress", max_ongoing_requests=256)(serve.ingress(http_app)(Ingress))
