"""One dynamic-batched deployment per model (Ray Serve `@serve.batch`) over a `Backend`.

Batch size and wait come from the model's config.yaml and can change at runtime through the
deployment's `user_config` (`reconfigure`). Batches run in a worker thread so the replica keeps
queueing requests, and therefore forming the next batch, while one executes.
"""

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray import serve

from pipelines.analysis_decode import AnalysisImage
from pipelines.decode import DecodedImage, DecoderName, decode_for_model
from serving.backends import load_backend
from serving.config.model_config import BatchingConfig
from serving.config.settings import ServerSettings
from serving.errors import InvalidTensorError
from serving.metrics import BATCH_FILL, BATCH_SIZE, MODEL_INFO, QUEUE_WAIT, STAGE_LATENCY
from serving.oip.tensors import OIP_TO_NUMPY
from serving.repository import ModelRepository


@dataclass(frozen=True)
class ModelResult:
    """One item's outputs and where its time went (milliseconds)."""

    outputs: dict[str, np.ndarray]
    stage_ms: dict[str, float]


def split_batch(outputs: dict[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """Per-item outputs from batched ones, checking the batch contract (one row per input)."""
    for name, value in outputs.items():
        if value.shape[0] != count:
            raise RuntimeError(f"backend returned {value.shape[0]} rows for output '{name}' but the batch had {count}")
    return [{name: value[i] for name, value in outputs.items()} for i in range(count)]


class ModelServer:
    def __init__(
        self,
        model_name: str,
        backend_options: dict[str, dict[str, Any]] | None = None,
        decoder: DecoderName = "pillow",
        reduced_decode: bool = True,
    ):
        settings = ServerSettings.from_env()
        self.entry = ModelRepository.scan(settings, check_backends=False).get(model_name)
        if not self.entry.available:
            raise RuntimeError(self.entry.unavailable_reason)
        self.backend = load_backend(self.entry, backend_options)
        info = self.backend.info()
        MODEL_INFO.labels(model_name, self.entry.config.version, info.name, info.device, info.precision).inc()
        self.input_shape = tuple(self.entry.config.input.shape)
        self.input_dtype = np.dtype(OIP_TO_NUMPY[self.entry.config.input.dtype])
        self.batching = self.entry.config.batching
        # One @serve.batch queue per instance: Ray keeps the queue on the decorated function, so a class-level
        # decorator would make two models living in one process (model_location: ingress) share batches.
        self._run_batch = serve.batch(
            max_batch_size=self.batching.max_batch_size,
            batch_wait_timeout_s=self.batching.batch_wait_timeout_ms / 1000.0,
        )(self._execute_batch)
        # For `infer_encoded` (decode_location: model): decode here, saving a hop on small machines.
        self.spec = self.entry.config.preprocess_spec()
        self.limits = settings.decode_limits()
        self.decoder: DecoderName = decoder
        self.reduced_decode = reduced_decode

    def _apply_batching(self, batching: BatchingConfig) -> None:
        self.batching = batching
        self._run_batch.set_max_batch_size(batching.max_batch_size)
        self._run_batch.set_batch_wait_timeout_s(batching.batch_wait_timeout_ms / 1000.0)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Runtime update of the batching block (`user_config` in serve_config.yaml)."""
        merged = {**self.batching.model_dump(), **(user_config.get("batching") or {})}
        self._apply_batching(BatchingConfig.model_validate(merged))

    async def _execute_batch(
        self, items: list[tuple[np.ndarray, float]]
    ) -> list[tuple[dict[str, np.ndarray], float, float]]:
        model = self.entry.name
        start = time.perf_counter()
        for _, enqueued in items:
            QUEUE_WAIT.labels(model).observe(start - enqueued)
        BATCH_SIZE.labels(model).observe(len(items))
        BATCH_FILL.labels(model).observe(len(items) / self.batching.max_batch_size)
        outputs = await asyncio.to_thread(self.backend.infer, np.stack([tensor for tensor, _ in items]))
        elapsed = time.perf_counter() - start
        STAGE_LATENCY.labels("model", model).observe(elapsed)
        return [(row, start, elapsed) for row in split_batch(outputs, len(items))]

    def _check_tensor(self, tensor: np.ndarray) -> np.ndarray:
        if tuple(tensor.shape) != self.input_shape:
            raise InvalidTensorError(
                f"model '{self.entry.name}' input must have per-image shape {list(self.input_shape)}, "
                f"got {list(tensor.shape)}"
            )
        if tensor.dtype != self.input_dtype:
            raise InvalidTensorError(
                f"model '{self.entry.name}' input must be {self.entry.config.input.dtype}, got numpy {tensor.dtype}"
            )
        return tensor

    async def infer(self, item: DecodedImage | AnalysisImage | np.ndarray) -> ModelResult:
        """One image tensor (no batch axis), batched with concurrent callers; returns its outputs and timings."""
        if isinstance(item, AnalysisImage):
            tensor = item.tensors[self.entry.name]
        else:
            tensor = item.tensor if isinstance(item, DecodedImage) else item
        enqueued = time.perf_counter()
        outputs, started, elapsed = await self._run_batch((self._check_tensor(tensor), enqueued))
        stage_ms = {"queue": (started - enqueued) * 1000.0, "model": elapsed * 1000.0}
        if isinstance(item, (DecodedImage, AnalysisImage)):
            stage_ms["decode"] = item.decode_ms
        return ModelResult(outputs, stage_ms)

    def _decode(self, data: bytes) -> DecodedImage:
        start = time.perf_counter()
        decoded = decode_for_model(data, self.spec, self.limits, self.decoder, self.reduced_decode)
        elapsed = time.perf_counter() - start
        STAGE_LATENCY.labels("decode", self.entry.name).observe(elapsed)
        return dataclasses.replace(decoded, decode_ms=elapsed * 1000.0)

    async def infer_encoded(self, data: bytes) -> ModelResult:
        """Decode here (in a worker thread, overlapping the running batch), then join the dynamic batch."""
        return await self.infer(await asyncio.to_thread(self._decode, data))

    def metadata(self) -> dict[str, Any]:
        """The chosen backend and batching, for model metadata."""
        info = self.backend.info()
        return {
            "backend": info.name,
            "device": info.device,
            "platform": info.platform,
            "precision": info.precision,
            "detail": info.detail,
            "batching": self.batching.model_dump(),
        }


# The class stays importable under its own name so Ray pickles it by reference, not by value.
ModelDeployment = serve.deployment(name="Model", max_ongoing_requests=64)(ModelServer)
