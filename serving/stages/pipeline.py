"""The protocol between the service and the stages, whatever process the stages run in.

The service asks for one image at a time with a `StagePlan` (which models, whether quality metrics and metadata)
and gets `StageOutputs` back; a bad image raises its `ImageInputError`. OIP tensor requests go to the same model
stage through `infer_tensor`. Batching across concurrent requests happens behind this protocol.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pipelines.quality import QualityMetrics
from serving.config.model_entry import ModelEntry
from serving.errors import ModelUnavailableError


@dataclass(frozen=True)
class StagePlan:
    """What one image needs: the models to run, the quality metrics, the metadata."""

    models: tuple[str, ...] = ()
    quality: bool = False
    metadata: bool = False

    @property
    def needs_decode(self) -> bool:
        return bool(self.models) or self.quality


@dataclass(frozen=True)
class ModelResult:
    """One item's outputs and where its time went (milliseconds: queue, model)."""

    outputs: dict[str, np.ndarray]
    stage_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StageOutputs:
    """What the stages said about one image; a stage that was not planned is absent/None."""

    models: dict[str, ModelResult] = field(default_factory=dict)
    quality: QualityMetrics | None = None
    metadata: dict[str, Any] | None = None
    decode_ms: float | None = None


def check_plan(pipeline: "ImagePipeline", plan: StagePlan) -> None:
    """`ModelUnavailableError` (503) when the plan asks for a model or stage this pipeline does not run."""
    missing = [f"model '{name}'" for name in plan.models if name not in pipeline.model_names]
    missing += ["the quality stage"] if plan.quality and not pipeline.has_quality else []
    missing += ["the metadata stage"] if plan.metadata and not pipeline.has_metadata else []
    if missing:
        raise ModelUnavailableError(f"{', '.join(missing)} not served by this application")


class ImagePipeline(Protocol):
    """The stages as the service sees them (`LocalPipeline`, `GraphPipeline`). A pipeline that swaps models in place
    also has `hold(routed) -> ImagePipeline` (see `held_stages`)."""

    model_names: tuple[str, ...]  # models served by this pipeline
    has_quality: bool
    has_metadata: bool

    async def run(self, data: bytes, plan: StagePlan) -> StageOutputs: ...

    async def infer_tensor(self, model: str, tensor: np.ndarray) -> ModelResult: ...

    async def model_info(self, model: str) -> dict[str, Any]: ...


def held_stages(pipeline: ImagePipeline, routed: Iterable[ModelEntry]) -> ImagePipeline:
    """The stages one request runs on, taken in the same step as its model versions were `routed` (no await in
    between). A pipeline that swaps models in place (`LocalPipeline.hold`) gives a view that a later promotion,
    reload or unload does not change, so the version that answers is the routed one, labels and scores alike; one
    whose model stages never change under it (the graph placement: they change by redeploying) is its own."""
    hold = getattr(pipeline, "hold", None)
    return hold(routed) if hold is not None else pipeline
