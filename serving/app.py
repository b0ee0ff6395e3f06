"""The application builder named by `serve_config.yaml` (`import_path: serving.app:build_app`).

`args.placement` decides where the stages run, once, here:

- `local`: one Ingress deployment; each replica runs every stage in-process (decode, batched models, quality,
  metadata) and the batch-job loop. The fastest placement on one machine; `imgserve serve` picks it when Ray is
  local.
- `graph`: Ingress -> Decoder -> one batched deployment per model, plus Quality and Metadata deployments and the
  BatchWorker, each scaling on its own: the cluster shape, what KubeRay runs.

Models whose weights are missing, or that no backend can run here, are left out with a logged reason (and listed
as UNAVAILABLE by `/v1/models`); the default model must be servable.
"""

import logging
from typing import Any

from ray.serve import Application

from serving.config.app_args import AppArgs
from serving.deployments.batch_worker import BatchWorkerDeployment
from serving.deployments.ingress import IngressDeployment
from serving.deployments.stages import DecodeDeployment, MetadataDeployment, ModelDeployment, QualityDeployment
from serving.placement import IngressConfig, compose, model_deployment_name
from serving.placement.graph import GraphStages

logger = logging.getLogger("imgserve.app")


def graph_stages(config: IngressConfig) -> GraphStages:
    """One deployment per stage, bound with the settings `compose` made."""
    settings = config.stages
    models = {}
    for name, entry in settings.models.items():
        # Room for one batch executing and a full one queued behind it, so batches can fill.
        ongoing = 2 * entry.config.batching.max_batch_size
        models[name] = ModelDeployment.options(name=model_deployment_name(name), max_ongoing_requests=ongoing).bind(
            entry, settings.backend_options
        )
    return GraphStages(
        decode=DecodeDeployment.bind(settings),  # type: ignore[arg-type]  # bound: Ray passes the handle
        models=models,  # type: ignore[arg-type]
        quality=QualityDeployment.bind() if settings.quality else None,  # type: ignore[arg-type]
        metadata=MetadataDeployment.bind(settings) if settings.metadata else None,  # type: ignore[arg-type]
    )


def build_app(args: dict[str, Any] | None = None) -> Application:
    config = compose(AppArgs.model_validate(args or {}))
    logger.info("placement %s: models %s", config.placement, sorted(config.stages.models))
    if config.placement == "local":
        return IngressDeployment.bind(config)
    stages = graph_stages(config)
    worker = BatchWorkerDeployment.bind(config, stages) if config.batch_jobs else None
    return IngressDeployment.bind(config, stages, worker)
