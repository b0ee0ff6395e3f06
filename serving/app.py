"""The application builder named by `serve_config.yaml` (`import_path: serving.app:build_app`).

Graph: Ingress -> Decoder (decode once, per-model preprocessing) -> one batched deployment per model;
Ingress -> Metadata (raw bytes: EXIF, GPS, XMP, colours) in parallel.
With `model_location: ingress` the decoder and the batched models live inside each Ingress replica instead
(serving.deployments.in_process): no actor call per image, for single machines.
Models whose weights are missing, or that no backend can run here, are left out with a logged reason
(and listed as UNAVAILABLE by `/v1/models`); the default model must be servable.
"""

import logging
from typing import Any

from ray.serve import Application

from serving.config.app_args import AppArgs
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
        return IngressDeployment.bind(
            None, {}, default.name, metadata, batch, True, quality, stages, options.direct_ingress
        )
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
    return IngressDeployment.bind(
        decoder, models, default.name, metadata, batch, decode_in_model, quality, None, options.direct_ingress
    )
