"""The local placement: every stage in the calling process (the Ingress replica, which also runs the job loop over
them; a test).

No actor call per image: decode and the CPU stages run in worker threads (Pillow, libjpeg, OpenCV and ONNX Runtime
release the GIL), models batch the replica's concurrent requests in their own `BatchQueue`. On one machine this is
the fastest placement (BENCHMARKS.md): Ray's per-call CPU costs more than decoding a web-size JPEG.
"""

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

import numpy as np

from serving.admission import REPLICA_LIMIT
from serving.config.model_entry import ModelEntry
from serving.errors import ModelUnavailableError
from serving.stages.concurrency import gather_or_raise, stage_thread
from serving.stages.decode import DecodeStage
from serving.stages.metadata import MetadataStage
from serving.stages.model import ModelStage
from serving.stages.pipeline import ModelResult, StageOutputs, StagePlan, check_plan
from serving.stages.quality import QualityStage
from serving.stages.settings import StageSettings


class LocalPipeline:
    def __init__(
        self,
        decode: DecodeStage,
        models: dict[str, ModelStage],
        quality: QualityStage | None = None,
        metadata: MetadataStage | None = None,
        settings: StageSettings | None = None,
    ):
        self.decode, self.models, self.quality, self.metadata = decode, models, quality, metadata
        self.settings = settings
        self.model_names = tuple(models)
        self.has_quality = quality is not None
        self.has_metadata = metadata is not None

    def _decode_admitted(self, data: bytes, stages: dict[str, ModelStage], quality: bool) -> Any:
        REPLICA_LIMIT.check_queue_wait()  # in the worker thread: one that waited too long for its first is shed
        specs = {name: stage.preprocess for name, stage in stages.items()}
        return self.decode.decode(data, tuple(stages), quality, specs)

    async def run(self, data: bytes, plan: StagePlan) -> StageOutputs:
        check_plan(self, plan)  # before any work starts, so nothing is left running on a refusal
        # a model reloaded meanwhile (`hold`): this one finishes, decoded for its own input (a new version's may differ)
        stages = {name: self.models[name] for name in plan.models}
        metadata = (
            asyncio.ensure_future(stage_thread(self.metadata.extract, data))
            if plan.metadata and self.metadata is not None
            else None
        )
        try:
            decoded = None
            if plan.needs_decode:
                decoded = await stage_thread(self._decode_admitted, data, stages, plan.quality)
        except BaseException:
            if metadata is not None:
                metadata.cancel()
                await asyncio.gather(metadata, return_exceptions=True)
            raise
        calls: dict[str, Awaitable[Any]] = {}
        if decoded is not None:
            for name, stage in stages.items():
                calls[name] = stage.infer(decoded.tensors[name])
            if plan.quality and self.quality is not None:
                calls["(quality)"] = stage_thread(self.quality.metrics, decoded)
        if metadata is not None:
            calls["(metadata)"] = metadata
        done = dict(zip(calls, await gather_or_raise(list(calls.values())), strict=True))
        return StageOutputs(
            models={name: done[name] for name in plan.models},
            quality=done.get("(quality)"),
            metadata=done.get("(metadata)"),
            decode_ms=decoded.decode_ms if decoded is not None else None,
        )

    def _model(self, name: str) -> ModelStage:
        check_plan(self, StagePlan(models=(name,)))
        return self.models[name]

    async def infer_tensor(self, model: str, tensor: np.ndarray) -> ModelResult:
        return await self._model(model).infer(tensor)

    async def model_info(self, model: str) -> dict[str, Any]:
        return self._model(model).info()

    def hold(self, routed: Iterable[ModelEntry]) -> "LocalPipeline":
        """The stages as they are now, for one request whose model versions were `routed` (`held_stages`): a swap
        afterwards does not change them, and a stage it retires still finishes what it is given. A routed version
        that is no longer the one served under its key (swapped before the request held it) is a 503 to retry."""
        for entry in routed:
            stage = self.models.get(entry.key)
            if stage is not None and stage.entry != entry:
                raise ModelUnavailableError(
                    f"model '{entry.name}' version {entry.version} was replaced (now version {stage.entry.version}) "
                    "while the request was routed, retry"
                )
        return LocalPipeline(self.decode, dict(self.models), self.quality, self.metadata, self.settings)

    async def swap_models(self, load: list[ModelEntry], remove: tuple[str, ...] = ()) -> None:
        """Serve `load` (new models, new versions, canary versions: each under its `key`) and stop serving the keys
        in `remove`, in one step once every backend has loaded (in worker threads, while requests go on). Requests
        that already hold a replaced or removed stage finish on it (its batch queue drains, then it is freed).
        A backend that fails to load raises before anything changed."""
        settings = self.settings or StageSettings(models={})
        built: dict[str, ModelStage] = {}
        try:
            for entry in load:
                stage = await asyncio.to_thread(ModelStage, entry, settings.backend_options, settings.batching)
                built[entry.key] = stage
        except BaseException:
            for stage in built.values():  # never served: counted off `imgserve_model_info` again
                stage.retire()
            raise
        for entry in load:
            self.decode.specs[entry.key] = entry.config.preprocess_spec()
        retired = [stage for key, stage in self.models.items() if key in remove or key in built]
        self.models = {**{k: stage for k, stage in self.models.items() if k not in remove}, **built}
        self.model_names = tuple(self.models)
        for stage in retired:
            stage.retire()


def build_local_pipeline(settings: StageSettings, models: dict[str, ModelStage] | None = None) -> LocalPipeline:
    """Load every servable model once (or take `models`, built already) and build the stages the settings ask for."""
    if models is None:
        models = {
            name: ModelStage(entry, settings.backend_options, settings.batching)
            for name, entry in settings.models.items()
        }
    return LocalPipeline(
        DecodeStage(settings),
        models,
        QualityStage() if settings.quality else None,
        MetadataStage(settings.limits) if settings.metadata else None,
        settings,
    )
