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
        # every stage-call queue (images per plan, tensors per model) batches with the same options
        self._new_queue = partial(
            BatchQueue,
            max_batch_size=calls.max_images_per_call,
            batch_wait_timeout_s=0.0,
            max_concurrent_batches=calls.concurrent_calls,
            max_queued=calls.max_queued_images,
        )
        self._images: dict[StagePlan, BatchQueue[bytes, StageOutputs]] = {}  # a queue per plan, made on first use
        self._tensors = {name: self._new_queue(partial(self._run_tensors, name)) for name in stages.models}

    def _model(self, name: str) -> DeploymentHandle:
        check_plan(self, StagePlan(models=(name,)))
        return self.stages.models[name]

    async def run(self, data: bytes, plan: StagePlan) -> StageOutputs:
        check_plan(self, plan)
        queue = self._images.get(plan)
        if queue is None:
            queue = self._images[plan] = self._new_queue(partial(self._run_images, plan))
        return await queue.submit(data)

    async def _run_images(self, plan: StagePlan, items: list[Queued[bytes]]) -> list[StageOutputs | BaseException]:
        """One call per stage `plan` needs, for all `items` (a queue holds one plan's images); then each image's
        outputs from its slot in every answer."""
        images = [q.item for q in items]
        STAGE_CALL_IMAGES.observe(len(items))
        calls: dict[str, Any] = {}
        if plan.needs_decode:
            decoded = self.stages.decode.decode_many.remote([(data, plan.models, plan.quality) for data in images])
            for name in dict.fromkeys(plan.models):
                calls[name] = self.stages.models[name].infer_decoded.remote(decoded)
            if plan.quality and self.stages.quality is not None:
                calls["(quality)"] = self.stages.quality.metrics_many.remote(decoded)
        if plan.metadata and self.stages.metadata is not None:
            calls["(metadata)"] = self.stages.metadata.extract_many.remote(images)
        # A stage call that failed as a whole fails only the images that needed that stage (`_pick`).
        answers = await asyncio.gather(*(await_stage(call) for call in calls.values()), return_exceptions=True)
        done = dict(zip(calls, answers, strict=True))
        return [self._outputs(slot, plan, done) for slot in range(len(items))]

    @staticmethod
    def _outputs(slot: int, plan: StagePlan, done: dict[str, Any]) -> StageOutputs | BaseException:
        try:
            models: dict[str, ModelResult] = {name: _pick(done[name], slot) for name in plan.models}
            quality = _pick(done["(quality)"], slot) if "(quality)" in done else None
            metadata = _pick(done["(metadata)"], slot) if "(metadata)" in done else None
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
