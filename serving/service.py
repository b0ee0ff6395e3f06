"""The service layer: one implementation of every operation, called by both the HTTP routes and gRPC.

It owns the deployment handles (decode stage, one batched deployment per model) and the model
repository, validates requests, fans images out to the stages and assembles typed results.
"""

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from serving.access_log import record_stages
from serving.errors import (
    BadRequestError,
    InvalidTensorError,
    ModelUnavailableError,
    OverloadedError,
    RequestTooLargeError,
)
from serving.postprocess import Prediction, scores_from_output, top_k
from serving.quality_report import QUALITY_MODEL, anomaly_result, quality_result
from serving.repository import ModelEntry, ModelRepository

T = TypeVar("T")
IMAGE_MODEL_NAME = "classify"  # OIP model whose input is a BYTES tensor of encoded images


async def await_stage(response: Awaitable[T]) -> T:
    """Await a deployment response, turning Ray's queue-full rejection into our JSON/gRPC overload error."""
    from ray.serve.exceptions import BackPressureError

    try:
        return await response
    except BackPressureError as exc:
        raise OverloadedError(f"server is overloaded, retry later ({exc.message})") from None


async def _gather_in_order(calls: list[Awaitable[T]]) -> list[T]:
    """Run concurrently; if any fails, raise the first failure in request order, noting its index."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for index, result in enumerate(results):
        if isinstance(result, BaseException):
            if len(results) > 1:
                result.add_note(f"image index {index}")
            raise result
    return list(results)  # type: ignore[arg-type]


class _Method(Protocol):
    def remote(self, *args: Any, **kwargs: Any) -> Any: ...


class DecoderHandle(Protocol):
    decode: _Method


class ModelHandle(Protocol):
    infer: _Method
    infer_encoded: _Method
    metadata: _Method


class MetadataHandle(Protocol):
    extract: _Method


class QualityHandle(Protocol):
    metrics: _Method


@dataclass(frozen=True)
class Classification:
    """Top-k for one image."""

    model: str
    predictions: list[Prediction]
    timing_ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)  # decode, queue, model


@dataclass(frozen=True)
class Analysis:
    """Everything the selected stages say about one image; a stage that was not asked for is None."""

    classification: Classification | None = None
    quality: dict[str, Any] | None = None  # score, level, tags with evidence, metrics (serving.quality_report)
    anomaly: dict[str, Any] | None = None  # learned model: score, per-distortion probabilities
    metadata: dict[str, Any] | None = None  # pipelines.metadata.ImageMetadata.to_dict()


ANALYSIS_FIELDS = ("classification", "quality", "anomaly", "metadata")


@dataclass
class ModelStatus:
    name: str
    version: str
    task: str
    state: str  # "READY", "UNAVAILABLE"
    reason: str | None = None
    backend: dict[str, Any] = field(default_factory=dict)


class InferenceService:
    def __init__(
        self,
        repository: ModelRepository,
        decoder: DecoderHandle,
        models: dict[str, ModelHandle],
        default_model: str,
        max_images_per_request: int = 256,
        metadata: MetadataHandle | None = None,
        decode_in_model: bool = False,
        quality: QualityHandle | None = None,
    ):
        self.repository = repository
        self.decoder = decoder
        self.models = models
        self.metadata = metadata
        self.decode_in_model = decode_in_model
        self.quality = quality
        self.default_model = default_model
        self.max_images_per_request = max_images_per_request
        self._backend_info: dict[str, dict[str, Any]] = {}

    # ---- models -------------------------------------------------------------------------------------
    def served_entry(self, name: str | None) -> ModelEntry:
        """The repository entry for a served model: 404 if unknown, 503 if known but not servable here."""
        entry = self.repository.get(name or self.default_model)
        if entry.name not in self.models:
            reason = entry.unavailable_reason or "not deployed in this application"
            raise ModelUnavailableError(f"model '{entry.name}' is not available: {reason}")
        return entry

    async def backend_info(self, name: str) -> dict[str, Any]:
        """The model replica's backend report (cached: it does not change for a replica set)."""
        if name not in self._backend_info:
            self._backend_info[name] = await self.models[name].metadata.remote()
        return self._backend_info[name]

    async def model_statuses(self) -> list[ModelStatus]:
        statuses = []
        for name, entry in sorted(self.repository.entries.items()):
            if name in self.models:
                statuses.append(
                    ModelStatus(
                        name, entry.config.version, entry.config.task, "READY", None, await self.backend_info(name)
                    )
                )
            else:
                reason = entry.unavailable_reason or "not deployed in this application"
                statuses.append(ModelStatus(name, entry.config.version, entry.config.task, "UNAVAILABLE", reason))
        return statuses

    async def model_ready(self, name: str) -> bool:
        entry = self.repository.get(name) if name != IMAGE_MODEL_NAME else None
        target = entry.name if entry else self.default_model
        if target not in self.models:
            return False
        try:
            await asyncio.wait_for(self.backend_info(target), timeout=5)
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False
        return True

    async def server_ready(self) -> bool:
        results = await asyncio.gather(*(self.model_ready(name) for name in self.models))
        return bool(results) and all(results)

    # ---- images -------------------------------------------------------------------------------------
    def _check_image_count(self, images: list[bytes]) -> None:
        if not images:
            raise BadRequestError("no image in the request: send a raw image body or multipart field 'image'")
        if len(images) > self.max_images_per_request:
            raise RequestTooLargeError(
                f"{len(images)} images in one request; the limit is {self.max_images_per_request}"
            )

    async def _classify_one(self, data: bytes, entry: ModelEntry, k: int) -> Classification:
        start = time.perf_counter()
        model = self.models[entry.name]
        if self.decode_in_model:
            result = await await_stage(model.infer_encoded.remote(data))
        else:
            # The decode result goes straight from the decode replica to the model replica, not through here.
            result = await await_stage(model.infer.remote(self.decoder.decode.remote(data, entry.name)))
        spec = entry.config.outputs[0]
        predictions = top_k(scores_from_output(result.outputs[spec.name], spec), entry.labels, k)
        stage_ms = {name: round(ms, 3) for name, ms in result.stage_ms.items()}
        record_stages(stage_ms)
        return Classification(entry.name, predictions, (time.perf_counter() - start) * 1000.0, stage_ms)

    async def classify(self, images: list[bytes], model: str | None = None, k: int = 5) -> list[Classification]:
        """Top-k per image, in request order. The first bad image fails the request with its index."""
        entry = self.served_entry(model)
        if entry.config.task != "classification":
            raise BadRequestError(f"model '{entry.name}' is a {entry.config.task} model, not a classifier")
        if k < 1:
            raise BadRequestError(f"top_k must be >= 1, got {k}")
        self._check_image_count(images)
        return await _gather_in_order([self._classify_one(d, entry, k) for d in images])

    @property
    def available_fields(self) -> tuple[str, ...]:
        """Analysis stages deployed in this application."""
        deployed = {
            "classification": True,
            "quality": self.quality is not None,
            "anomaly": QUALITY_MODEL in self.models,
            "metadata": self.metadata is not None,
        }
        return tuple(f for f in ANALYSIS_FIELDS if deployed[f])

    def analysis_fields(self, fields: list[str] | None) -> tuple[str, ...]:
        """The stages to run: all available when none are named; unknown names are a 400."""
        available = self.available_fields
        fields = [name.strip() for item in fields or [] for name in item.split(",") if name.strip()]
        if not fields:
            return available
        unknown = sorted(set(fields) - set(available))
        if unknown:
            raise BadRequestError(f"unknown analysis fields {unknown}; available: {', '.join(available)}")
        return tuple(f for f in available if f in fields)

    async def extract_metadata(self, images: list[bytes]) -> list[dict[str, Any]]:
        """Metadata per image, in request order (the metadata stage's own replicas)."""
        if self.metadata is None:
            raise ModelUnavailableError("the metadata stage is not deployed in this application")
        self._check_image_count(images)
        handle = self.metadata
        return await _gather_in_order([await_stage(handle.extract.remote(d)) for d in images])

    async def _analyze_one(self, data: bytes, selected: tuple[str, ...], entry: ModelEntry, k: int) -> Analysis:
        """Decode once for every consumer; the model(s), the quality metrics and metadata run in parallel."""
        start = time.perf_counter()
        use_model = ("quality" in selected or "anomaly" in selected) and QUALITY_MODEL in self.models
        models = ([entry.name] if "classification" in selected else []) + ([QUALITY_MODEL] if use_model else [])
        calls: dict[str, Awaitable[Any]] = {}
        if models or "quality" in selected:
            decoded = self.decoder.decode_analysis.remote(data, models, "quality" in selected)
            if isinstance(decoded, asyncio.Future):
                # In-process decoder (model_location: ingress): remote stages need the value, not the local task.
                decoded = await await_stage(decoded)
            if "classification" in selected:
                calls["classification"] = self.models[entry.name].infer.remote(decoded)
            if use_model:
                calls["anomaly"] = self.models[QUALITY_MODEL].infer.remote(decoded)
            if "quality" in selected:
                calls["quality"] = self.quality.metrics.remote(decoded)  # type: ignore[union-attr]
        if "metadata" in selected:
            calls["metadata"] = self.metadata.extract.remote(data)  # type: ignore[union-attr]
        done = dict(zip(calls, await asyncio.gather(*(await_stage(c) for c in calls.values())), strict=True))
        classification = None
        if "classification" in done:
            result = done["classification"]
            spec = entry.config.outputs[0]
            predictions = top_k(scores_from_output(result.outputs[spec.name], spec), entry.labels, k)
            stage_ms = {name: round(ms, 3) for name, ms in result.stage_ms.items()}
            record_stages(stage_ms)
            classification = Classification(entry.name, predictions, (time.perf_counter() - start) * 1000.0, stage_ms)
        anomaly = None
        if "anomaly" in done:
            anomaly = anomaly_result(done["anomaly"].outputs, self.repository.get(QUALITY_MODEL).labels)
        return Analysis(
            classification=classification,
            quality=quality_result(done["quality"], anomaly) if "quality" in done else None,
            anomaly=anomaly if "anomaly" in selected else None,
            metadata=done.get("metadata"),
        )

    async def analyze(
        self, images: list[bytes], model: str | None = None, k: int = 5, fields: list[str] | None = None
    ) -> list[Analysis]:
        """The selected stages per image, run concurrently, in request order."""
        selected = self.analysis_fields(fields)
        entry = self.served_entry(model)
        if "classification" in selected and entry.config.task != "classification":
            raise BadRequestError(f"model '{entry.name}' is a {entry.config.task} model, not a classifier")
        self._check_image_count(images)
        return await _gather_in_order([self._analyze_one(d, selected, entry, k) for d in images])

    # ---- tensors (Open Inference Protocol) ----------------------------------------------------------
    async def infer_tensor(self, model: str, batch: np.ndarray) -> dict[str, np.ndarray]:
        """A client-batched tensor: each row joins the model's dynamic batches, results are re-stacked."""
        entry = self.served_entry(model)
        expected = entry.config.input.shape
        if batch.ndim != len(expected) + 1:
            raise InvalidTensorError(
                f"input for '{entry.name}' must have shape [batch, {', '.join(map(str, expected))}], "
                f"got {list(batch.shape)}"
            )
        if batch.shape[0] == 0:
            raise InvalidTensorError("input has an empty batch")
        if batch.shape[0] > self.max_images_per_request:
            raise RequestTooLargeError(f"batch of {batch.shape[0]}; the limit is {self.max_images_per_request}")
        handle = self.models[entry.name]
        rows = await asyncio.gather(*(await_stage(handle.infer.remote(np.ascontiguousarray(row))) for row in batch))
        for row in rows:
            record_stages(row.stage_ms)
        return {spec.name: np.stack([row.outputs[spec.name] for row in rows]) for spec in entry.config.outputs}
