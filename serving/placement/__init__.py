"""The composition root: the repository scanned once, the stages' settings, and the one placement switch.

`compose` runs once, where the application is built (`serving.app.build_app`): it scans the model repository,
verifies the weights and decides what every stage gets. Replicas receive the result (`IngressConfig`) and never
scan again. `build_pipeline` is the switch: no stage handles -> `LocalPipeline` (every stage in this process);
`GraphStages` handles -> `GraphPipeline` (each stage its own deployment).
"""

import logging
import os
from dataclasses import dataclass

from pipelines.quality.thresholds import load_thresholds
from serving.config.app_args import AppArgs, DirectIngressOptions, GraphCallOptions, check_batch_waits
from serving.config.settings import ServerSettings
from serving.repository import ModelRepository
from serving.service import InferenceService
from serving.stages.local import build_local_pipeline
from serving.stages.pipeline import ImagePipeline
from serving.stages.settings import StageSettings

logger = logging.getLogger("imgserve.placement")


@dataclass(frozen=True)
class IngressConfig:
    """Everything an Ingress (or BatchWorker) replica is built from; picklable, made once by `compose`."""

    repository: ModelRepository  # every model, with the reason an unavailable one is not served
    default_model: str
    stages: StageSettings
    settings: ServerSettings  # read once where the application is built; replicas use this copy
    placement: str = "graph"
    direct_ingress: DirectIngressOptions | None = None
    batch_jobs: bool = True
    graph_calls: GraphCallOptions | None = None


def compose(options: AppArgs, settings: ServerSettings | None = None) -> IngressConfig:
    """Scan and verify once; fail loudly on unknown model names or an unservable default model."""
    settings = settings or ServerSettings.from_env()
    repository = ModelRepository.scan(settings)
    wanted = list(repository.entries) if options.models == "all" else options.models
    for name in wanted:
        repository.get(name)  # unknown names fail the deploy loudly
    default = repository.get(options.default_model)
    if not default.available:
        raise RuntimeError(f"default model '{default.name}' cannot be served: {default.unavailable_reason}")
    servable = {}
    for name in wanted:
        entry = repository.get(name)
        if entry.available:
            servable[name] = entry
        else:
            logger.warning("model %s is not deployed: %s", name, entry.unavailable_reason)
    # `imgserve serve` refuses this before starting (serving.serve_file); here for a config deployed otherwise
    check_batch_waits(
        options,
        {n: (e.config.batching.batch_wait_timeout_ms, str(e.folder / "config.yaml")) for n, e in servable.items()},
    )
    stages = StageSettings(
        models=servable,
        limits=settings.decode_limits(),
        thresholds=load_thresholds(os.environ.get("IMGSERVE_QUALITY_THRESHOLDS") or None),
        decoder=options.decoder,
        reduced_decode=options.reduced_decode,
        backend_options={"onnxruntime": {"intra_op_threads": options.ort_threads}} if options.ort_threads else None,
        batching=options.batching,
        quality=options.quality,
        metadata=options.metadata,
    )
    return IngressConfig(
        repository,
        default.name,
        stages,
        settings,
        options.placement,
        options.direct_ingress,
        options.batch_jobs,
        options.graph_calls,
    )


def build_pipeline(config: IngressConfig, stages: object | None = None) -> ImagePipeline:
    """The placement switch: `stages` is None (local) or the graph's `GraphStages` handles."""
    if stages is None:
        return build_local_pipeline(config.stages)
    from serving.placement.graph import GraphPipeline, GraphStages

    assert isinstance(stages, GraphStages)
    return GraphPipeline(stages, config.graph_calls)


def build_service(config: IngressConfig, stages: object | None = None) -> InferenceService:
    return InferenceService(
        config.repository,
        build_pipeline(config, stages),
        config.default_model,
        config.settings.max_images_per_request,
        config.stages.thresholds,
    )


def model_deployment_name(model: str) -> str:
    """Deployment name of a model's batched stage (what serve_config.yaml configures)."""
    return f"model-{model}"


def deployment_names(args: dict | None = None) -> set[str]:
    """The deployments `serving.app.build_app(args)` makes (named in serving/deployments; a unit test builds the app
    and compares): serve_config.yaml may configure only these (Ray Serve refuses a config naming one the
    application does not build, e.g. `Metadata` with `metadata: false`, or the deployment of a model left out)."""
    config = compose(AppArgs.model_validate(args or {}))
    names = {"Ingress"}
    if config.placement != "local":
        names |= {"Decoder", *(model_deployment_name(m) for m in config.stages.models)}
        names |= {"Quality"} if config.stages.quality else set()
        names |= {"Metadata"} if config.stages.metadata else set()
        names |= {"BatchWorker"} if config.batch_jobs else set()
    return names
