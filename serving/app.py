"""The application builder named by `serve_config.yaml` (`import_path: serving.app:build_app`).

Graph: Ingress -> Decoder (decode once, per-model preprocessing) -> one batched deployment per model;
Ingress -> Metadata (raw bytes: EXIF, GPS, XMP, colours) in parallel.
With `model_location: ingress` the decoder and the batched models live inside each Ingress replica instead
(serving.deployments.in_process): no actor call per image, for single machines.
Models whose weights are missing, or that no backend can run here, are left out with a logged reason
(and listed as UNAVAILABLE by `/v1/models`); the default model must be servable.
"""

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from serving.config.settings import ServerSettings
from serving.deployments.decoder import DecoderDeployment
from serving.deployments.in_process import InProcessStages
from serving.deployments.ingress import IngressDeployment
from serving.deployments.metadata import MetadataDeployment
from serving.deployments.model import ModelDeployment
from serving.deployments.quality import QualityDeployment
from serving.jobs.worker import BatchWorkerDeployment
from serving.repository import ModelRepository

logger = logging.getLogger("imgserve.app")


class AppArgs(BaseModel):
    """`args:` of the application in serve_config.yaml."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] | Literal["all"] = Field(
        default="all", description="Models to deploy; 'all' = every servable one."
    )
    default_model: str = Field(default="mobilenet_v2_imagenet", description="Model used when a request names none.")
    decoder: Literal["pillow", "opencv"] = Field(default="pillow", description="CPU decoder of the decode stage.")
    reduced_decode: bool = Field(default=True, description="Decode JPEG at 1/2..1/8 scale when the model input allows.")
    decode_location: Literal["stage", "model"] = Field(
        default="stage",
        description="'stage': the Decoder deployment decodes (scales on its own, the cluster default); 'model': "
        "classification requests are decoded inside the model replica, one hop fewer (small machines).",
    )
    model_location: Literal["stage", "ingress"] = Field(
        default="stage",
        description="'stage': the Decoder and one batched deployment per model, each scaling on its own (the "
        "graph; clusters); 'ingress': every Ingress replica decodes and runs the batched models in-process, no "
        "actor call per image (single machines, where Ray's per-call CPU dominates); scale by Ingress replicas. "
        "The serve config must then not list Decoder or model-* deployments.",
    )
    batching: dict[str, Any] | None = Field(
        default=None,
        description="model_location 'ingress' only: overrides of every model's batching block (keys of "
        "config.yaml `batching`); per-model deployments take the same mapping as `user_config: {batching: ...}`.",
    )
    ort_threads: int | None = Field(default=None, description="ONNX Runtime intra-op threads per model replica.")
    metadata: bool = Field(default=True, description="Deploy the metadata stage (EXIF, GPS, XMP, colours).")
    quality: bool = Field(default=True, description="Deploy the quality stage (classical metrics, score, tags).")
    batch_jobs: bool = Field(default=True, description="Deploy the BatchWorker behind /v1/batch and /v1/jobs.")


def model_deployment_name(model: str) -> str:
    """Deployment name of a model's batched stage (what serve_config.yaml configures)."""
    return f"model-{model}"


def build_app(args: dict[str, Any] | None = None) -> Application:
    options = AppArgs.model_validate(args or {})
    repository = ModelRepository.scan(ServerSettings.from_env())
    wanted = list(repository.entries) if options.models == "all" else options.models
    for name in wanted:
        repository.get(name)  # unknown names fail the deploy loudly
    default = repository.get(options.default_model)
    if not default.available:
        raise RuntimeError(f"default model '{default.name}' cannot be served: {default.unavailable_reason}")
    backend_options = {"onnxruntime": {"intra_op_threads": options.ort_threads}} if options.ort_threads else None
    servable = []
    for name in wanted:
        entry = repository.get(name)
        if not entry.available:
            logger.warning("model %s is not deployed: %s", name, entry.unavailable_reason)
            continue
        servable.append(name)
    metadata = MetadataDeployment.bind() if options.metadata else None
    quality = QualityDeployment.bind() if options.quality else None
    if options.model_location == "ingress":
        stages = InProcessStages(
            tuple(servable), backend_options, options.decoder, options.reduced_decode, options.batching
        )
        batch = None
        if options.batch_jobs:
            batch = BatchWorkerDeployment.bind(None, {}, default.name, metadata, quality, stages)
        return IngressDeployment.bind(None, {}, default.name, metadata, batch, True, quality, stages)
    models = {}
    for name in servable:
        # Room for one batch executing and a full one queued behind it, so batches can fill.
        ongoing = 2 * repository.get(name).config.batching.max_batch_size
        models[name] = ModelDeployment.options(name=model_deployment_name(name), max_ongoing_requests=ongoing).bind(
            name, backend_options, options.decoder, options.reduced_decode
        )
    decoder = DecoderDeployment.bind(decoder=options.decoder, reduced_decode=options.reduced_decode)
    batch = BatchWorkerDeployment.bind(decoder, models, default.name, metadata, quality) if options.batch_jobs else None
    decode_in_model = options.decode_location == "model"
    return IngressDeployment.bind(decoder, models, default.name, metadata, batch, decode_in_model, quality)
