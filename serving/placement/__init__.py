"""The composition root: the repository scanned once, the stages' settings, and the one placement switch.

`compose` runs once, where the application is built (`serving.app.build_app`): it scans the model repository,
verifies the weights and decides what every stage gets. Replicas receive the result (`IngressConfig`) and never
scan again. `build_pipeline` is the switch: no stage handles -> `LocalPipeline` (every stage in this process);
`GraphStages` handles -> `GraphPipeline` (each stage its own deployment).
"""

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

from pipelines.quality.thresholds import served_thresholds
from serving.config.app_args import AppArgs, DirectIngressOptions, GraphCallOptions, check_batch_waits
from serving.config.model_entry import ModelEntry
from serving.config.placement_overlay import MODEL_DEPLOYMENT_PREFIX
from serving.config.settings import ServerSettings
from serving.graph_check import graph_problems
from serving.repository import ModelRepository
from serving.service import InferenceService
from serving.stages.local import LocalPipeline, build_local_pipeline
from serving.stages.model import ModelStage
from serving.stages.pipeline import ImagePipeline
from serving.stages.settings import StageSettings
from serving.weights import weights_problems_kept

logger = logging.getLogger("imgserve.placement")
# True within `quiet_unserved_models`: compose for a command that serves nothing.
_serves_nothing: ContextVar[bool] = ContextVar("serves_nothing", default=False)


@contextmanager
def quiet_unserved_models() -> Iterator[None]:
    """`compose` for a command that serves nothing (`imgserve collection analyze`): the models that cannot be served
    here are debug lines, not the server's "is not deployed" warning and the weights' paths (a run using only the
    default classifier printed both for resnet50); a default model that cannot be served is still an error, naming
    the paths looked in (the server's log line it would have had)."""
    token = _serves_nothing.set(True)
    try:
        yield
    finally:
        _serves_nothing.reset(token)


def _unserved_level() -> int:
    """The level of a line about a model, or a canary version, that will not be served."""
    return logging.DEBUG if _serves_nothing.get() else logging.WARNING


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
    with weights_problems_kept() if _serves_nothing.get() else nullcontext({}) as weights_details:
        repository = ModelRepository.scan(settings)
    wanted = list(repository.entries) if options.models == "all" else options.models
    for name in wanted:
        repository.get(name)  # unknown names fail the deploy loudly
    default = repository.get(options.default_model)
    if not default.available:
        reason = weights_details.get(default.name, default.unavailable_reason)  # no server log to read: its paths
        raise RuntimeError(f"default model '{default.name}' cannot be served: {reason}")
    servable = {}
    for name in wanted:
        entry = repository.get(name)
        problem = graph_problems(entry) if entry.available else None
        if problem is not None:  # not deployed (graph) nor built (local): listed unavailable, the rest served
            entry = mark_unavailable(repository, entry, problem)
        if entry.available:
            servable[name] = entry
        else:
            logger.log(_unserved_level(), "model %s is not deployed: %s", name, entry.unavailable_reason)
    if options.default_model not in servable:  # its graph contradicts its config
        reason = repository.get(options.default_model).unavailable_reason
        raise RuntimeError(f"default model '{options.default_model}' cannot be served: {reason}")
    servable |= canary_stages(repository, servable)
    # `imgserve serve` refuses this before starting (serving.serve_file); here for a config deployed otherwise
    check_batch_waits(
        options,
        {n: (e.config.batching.batch_wait_timeout_ms, str(e.folder / "config.yaml")) for n, e in servable.items()},
    )
    stages = StageSettings(
        models=servable,
        limits=settings.decode_limits(),
        thresholds=served_thresholds(),
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


def canary_stages(repository: ModelRepository, served: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
    """The canary versions of the `served` models (a split kept in `versions.yaml`), keyed by their stage key
    ("<name>@<version>", as model control loads them at runtime: `serving.model_control.load_unlocked`), so every
    placement builds them beside the served versions. A canary that cannot be served here is dropped from
    `repository.canaries` with the reason: all of its model's requests go to the served version, never a 503."""
    stages = {}
    for name, (entry, percent) in list(repository.canaries.items()):
        problem = graph_problems(entry) if entry.available else None
        if problem is not None:  # a canary whose config contradicts its graph: no stage, no deployment
            entry = dataclasses.replace(entry, unavailable_reason=problem)
        if name not in served:  # the model itself is not deployed (logged above): nothing to split
            del repository.canaries[name]
        elif not entry.available:
            del repository.canaries[name]
            logger.log(
                _unserved_level(),
                "model %s: canary version %s (%g %% of its requests) is not served, version %s answers them all: %s",
                name,
                entry.version,
                percent,
                served[name].version,
                entry.unavailable_reason,
            )
        else:
            stages[entry.key] = entry
    return stages


def _model_stage(entry: ModelEntry, settings: StageSettings) -> ModelStage | str:
    """`entry`'s stage, or why its backend failed to load (a graph its config contradicts, a corrupt file, an
    unsupported op), said without the server's paths: the reason is shown to every caller of /v1/models."""
    try:
        return ModelStage(entry, settings.backend_options, settings.batching)
    except Exception as exc:  # noqa: BLE001 - any backend failure leaves this model out, not the server
        reason = f"its backend failed to load: {type(exc).__name__}: {str(exc)[:300]}"
        for path in (entry.artifacts.onnx, entry.artifacts.onnx_int8, entry.folder):
            if path is not None:
                reason = reason.replace(str(path), path.name)
        logger.warning("model %s version %s is not served: %s", entry.name, entry.version, reason)
        return reason


def build_local_stages(settings: StageSettings) -> tuple[LocalPipeline, dict[str, str]]:
    """Every stage in this process: the served versions, then each canary version under its key, as model control
    adds one (`LocalPipeline.swap_models`). A version whose backend fails to load is left out with the reason
    (returned, by key), as a failed load at runtime leaves what was served: one model whose config contradicts its
    graph stopped the whole server (`build_service` marks it unavailable; `drop_unbuilt_canaries` ends a split)."""
    built: dict[str, ModelStage] = {}
    unbuilt: dict[str, str] = {}
    for key, entry in settings.models.items():
        stage = _model_stage(entry, settings)
        if isinstance(stage, str):
            unbuilt[key] = stage
        else:
            built[key] = stage
    canaries = {key: entry for key, entry in settings.models.items() if key != entry.name}
    served_entries = {key: entry for key, entry in settings.models.items() if key not in canaries}
    served = {key: stage for key, stage in built.items() if key in served_entries}
    pipeline = build_local_pipeline(dataclasses.replace(settings, models=served_entries), served)
    canary_built = {key: stage for key, stage in built.items() if key in canaries}
    if not canary_built:
        return pipeline, unbuilt
    for key in canary_built:
        pipeline.decode.specs[key] = canaries[key].config.preprocess_spec()
    models = {**pipeline.models, **canary_built}
    return LocalPipeline(pipeline.decode, models, pipeline.quality, pipeline.metadata, pipeline.settings), unbuilt


def build_pipeline(config: IngressConfig, stages: object | None = None) -> ImagePipeline:
    """The placement switch: `stages` is None (local) or the graph's `GraphStages` handles."""
    if stages is None:
        pipeline, unbuilt = build_local_stages(config.stages)
        mark_unbuilt(config, unbuilt)
        return pipeline
    from serving.placement.graph import GraphPipeline, GraphStages

    assert isinstance(stages, GraphStages)
    return GraphPipeline(stages, config.graph_calls)


def mark_unavailable(repository: ModelRepository, entry: ModelEntry, reason: str) -> ModelEntry:
    """`entry` listed unavailable with `reason`, as served entry and as its version's row (the repository index and
    /v1/models' versions read the rows: they said "not deployed in this application")."""
    unavailable = dataclasses.replace(entry, unavailable_reason=reason)
    repository.entries[entry.name] = unavailable
    versions = repository.versions.get(entry.name)
    if versions is not None and entry.version in versions:
        versions[entry.version] = unavailable
    return unavailable


def mark_unbuilt(config: IngressConfig, unbuilt: dict[str, str]) -> None:
    """The served versions whose stage did not build, listed unavailable with the reason (requests for them are a
    503 `model_unavailable`, as for missing weights); RuntimeError when it is the default model (nothing to serve
    by default)."""
    for key, reason in unbuilt.items():
        entry = config.repository.entries.get(key)
        if entry is None or entry.key != key:
            continue  # a canary version: drop_unbuilt_canaries ends its split
        if key == config.default_model:
            raise RuntimeError(f"default model '{key}' cannot be served: {reason}")
        mark_unavailable(config.repository, entry, reason)


def drop_unbuilt_canaries(repository: ModelRepository, pipeline: ImagePipeline) -> None:
    """Canary splits whose version has no stage in `pipeline` end, with a log line: the routing
    (`InferenceService.routed_entry`) would send their share to a stage that is not there (a 503)."""
    for name, (entry, _) in list(repository.canaries.items()):
        if entry.key not in pipeline.model_names:
            del repository.canaries[name]
            logger.warning(
                "model %s: canary version %s is not served here; the served version answers every request",
                name,
                entry.version,
            )


def build_service(config: IngressConfig, stages: object | None = None) -> InferenceService:
    pipeline = build_pipeline(config, stages)
    drop_unbuilt_canaries(config.repository, pipeline)
    return InferenceService(
        config.repository,
        pipeline,
        config.default_model,
        config.settings.max_images_per_request,
        config.stages.thresholds,
    )


def model_deployment_name(model: str) -> str:
    """Deployment name of a model's batched stage (what serve_config.yaml configures)."""
    return f"{MODEL_DEPLOYMENT_PREFIX}{model}"


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
