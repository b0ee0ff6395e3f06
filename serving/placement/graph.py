"""The graph placement: each stage its own Ray Serve deployment, scaling on its own (the cluster shape).

Ray's cost is per actor call, not per image, so the Ingress does not make one call per image per stage: a
`BatchQueue` gathers the images its concurrent requests bring and sends them in one call per stage (greedy:
whatever is queued when a call slot is free, up to `max_images_per_call`; `concurrent_calls` slots per replica).
The decode result goes from the Decoder
replica straight to the model and quality replicas (a `DeploymentResponse` passed as an argument), so tensors and
working images never travel through the Ingress; only small outputs come back.

Images that need the same stages (the same `StagePlan`) share a queue and its call slots; an image never waits for a
stage it does not need. With one queue for every plan, a `/v1/classify` waited 9.5 s while a killed Metadata replica
was replaced: the slot stayed taken until every stage of the call holding it (an `/v1/analyze`) had answered. The
cost: under mixed traffic each plan makes its own calls (fewer images per call), and `max_queued_images` bounds each
plan's queue.
"""

import asyncio
import copy
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
from ray.serve.handle import DeploymentHandle

from serving.config.app_args import GraphCallOptions
from serving.errors import OverloadedError
from serving.metrics import STAGE_CALL_IMAGES
from serving.stages.batching import BatchQueue, Queued
from serving.stages.pipeline import ModelResult, StageOutputs, StagePlan, check_plan

T = TypeVar("T")
Item = tuple[bytes, StagePlan]


async def await_stage(response: Awaitable[T]) -> T:
    """Await a deployment response, turning Ray's queue-full rejection into our JSON/gRPC overload error."""
    from ray.serve.exceptions import BackPressureError

    try:
        return await response
    except BackPressureError as exc:
        raise OverloadedError(f"server is overloaded, retry later ({exc.message})") from None


@dataclass(frozen=True)
class GraphStages:
    """Handles of the stage deployments (what `serving.app` binds for the graph placement)."""

    decode: DeploymentHandle
    models: dict[str, DeploymentHandle]
    quality: DeploymentHandle | None = None
    metadata: DeploymentHandle | None = None


def _pick(results: list[Any] | BaseException, index: int) -> Any:
    """One image's slot of a stage's list answer; an exception there (or instead of the answer) is its error."""
    if isinstance(results, BaseException):  # a copy per image (tracebacks do not pile up on one), with its cause
        raise copy.copy(results) from results.__cause__
    value = results[index]
    if isinstance(value, BaseException):
        raise value
    return value


class GraphPipeline:
    def __init__(self, stages: GraphStages, calls: GraphCallOptions | None = None):
        self.stages = stages
        self.calls = calls = calls or GraphCallOptions()
        self.model_names = tuple(stages.models)
        self.has_quality = stages.quality is not None
        self.has_metadata = stages.metadata is not None
        size, slots, queued = calls.max_images_per_call, calls.concurrent_calls, calls.max_queued_images
        self._new_queue = partial(BatchQueue, self._run_images, size, 0.0, slots, queued)
        self._images: dict[StagePlan, BatchQueue[Item, StageOutputs]] = {}  # a queue per plan, made on first use
        self._tensors = {
            name: BatchQueue(partial(self._run_tensors, name), size, 0.0, slots, queued) for name in stages.models
        }

    def _model(self, name: str) -> DeploymentHandle:
        check_plan(self, StagePlan(models=(name,)))
        return self.stages.models[name]

    async def run(self, data: bytes, plan: StagePlan) -> StageOutputs:
        check_plan(self, plan)
        queue = self._images.get(plan)
        if queue is None:
            queue = self._images[plan] = self._new_queue()
        return await queue.submit((data, plan))

    async def _run_images(self, items: list[Queued[Item]]) -> list[StageOutputs | BaseException]:
        """One call per stage for all `items`; then each image's outputs from its slot in every answer."""
        plans = [q.item[1] for q in items]
        STAGE_CALL_IMAGES.observe(len(items))
        decoding = [i for i, plan in enumerate(plans) if plan.needs_decode]
        describing = [i for i, plan in enumerate(plans) if plan.metadata and self.stages.metadata is not None]
        calls: dict[str, Any] = {}
        if decoding:
            decoded = self.stages.decode.decode_many.remote(
                [(items[i].item[0], plans[i].models, plans[i].quality) for i in decoding]
            )
            for name in dict.fromkeys(m for i in decoding for m in plans[i].models):
                calls[name] = self.stages.models[name].infer_decoded.remote(decoded)
            if self.stages.quality is not None and any(plans[i].quality for i in decoding):
                calls["(quality)"] = self.stages.quality.metrics_many.remote(decoded)
        if describing:
            assert self.stages.metadata is not None
            calls["(metadata)"] = self.stages.metadata.extract_many.remote([items[i].item[0] for i in describing])
        # A stage call that failed as a whole fails only the images that needed that stage (`_pick`).
        answers = await asyncio.gather(*(await_stage(call) for call in calls.values()), return_exceptions=True)
        done = dict(zip(calls, answers, strict=True))
        decode_slot = {image: slot for slot, image in enumerate(decoding)}
        metadata_slot = {image: slot for slot, image in enumerate(describing)}
        return [self._outputs(i, plan, done, decode_slot, metadata_slot) for i, plan in enumerate(plans)]

    def _outputs(
        self,
        image: int,
        plan: StagePlan,
        done: dict[str, Any],
        decode_slot: dict[int, int],
        metadata_slot: dict[int, int],
    ) -> StageOutputs | BaseException:
        try:
            models: dict[str, ModelResult] = {}
            quality = metadata = None
            if image in decode_slot:
                slot = decode_slot[image]
                models = {name: _pick(done[name], slot) for name in plan.models}
                if plan.quality and "(quality)" in done:
                    quality = _pick(done["(quality)"], slot)
            if image in metadata_slot:
                metadata = _pick(done["(metadata)"], metadata_slot[image])
        except Exception as exc:  # noqa: BLE001 - this image's own error (e.g. it failed to decode)
            return exc
        decode_ms = next((r.stage_ms["decode"] for r in models.values() if "decode" in r.stage_ms), None)
        return StageOutputs(models, quality, metadata, decode_ms)

    async def _run_tensors(self, model: str, items: list[Queued[np.ndarray]]) -> list[ModelResult | BaseException]:
        return await await_stage(self.stages.models[model].infer_tensors.remote([q.item for q in items]))

    async def infer_tensor(self, model: str, tensor: np.ndarray) -> ModelResult:
        self._model(model)
        return await self._tensors[model].submit(tensor)

    async def model_info(self, model: str) -> dict[str, Any]:
        return await await_stage(self._model(model).info.remote())
