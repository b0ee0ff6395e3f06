"""The model stage: one model's `Backend` behind a dynamic batch queue. Tensors in, outputs out.

Batch size and wait come from the model's config.yaml and change at runtime through `reconfigure` (Ray Serve's
`user_config` in the graph placement). Batches run in a worker thread, so the event loop keeps queueing requests,
and therefore forming the next batch, while one executes.
"""

import time
from typing import Any

import numpy as np

from serving.admission import REPLICA_LIMIT
from serving.backends import load_backend
from serving.config.model_config import BatchingConfig
from serving.config.model_entry import ModelEntry
from serving.errors import InvalidTensorError
from serving.metrics import BATCH_FILL, BATCH_QUEUE_DEPTH, BATCH_SIZE, MODEL_INFO, QUEUE_WAIT, STAGE_LATENCY
from serving.model_statistics import recorded_batch
from serving.stages.batching import BatchQueue, Queued
from serving.stages.concurrency import stage_thread
from serving.stages.pipeline import ModelResult


def split_batch(outputs: dict[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """Per-item outputs from batched ones, checking the batch contract (one row per input)."""
    for name, value in outputs.items():
        if value.shape[0] != count:
            raise RuntimeError(f"backend returned {value.shape[0]} rows for output '{name}' but the batch had {count}")
    return [{name: value[i] for name, value in outputs.items()} for i in range(count)]


class ModelStage:
    def __init__(
        self,
        entry: ModelEntry,
        backend_options: dict[str, dict[str, Any]] | None = None,
        batching: dict[str, Any] | None = None,
    ):
        if not entry.available:
            raise RuntimeError(entry.unavailable_reason)
        self.entry = entry
        self.backend = load_backend(entry, backend_options)
        info = self.backend.info()
        self._info_labels: tuple[str, ...] | None = (
            entry.name, entry.config.version, info.name, info.device, info.precision,
        )  # fmt: skip
        MODEL_INFO.labels(*self._info_labels).inc()
        self.preprocess = entry.config.preprocess_spec()  # how images are made into this version's input
        self.input_shape = tuple(entry.config.input.shape)
        self.input_dtype = entry.config.input.numpy_dtype
        self.batching = entry.config.batching
        self._queue: BatchQueue[np.ndarray, ModelResult] = BatchQueue(
            self._execute,
            self.batching.max_batch_size,
            self.batching.batch_wait_timeout_ms / 1000.0,
            self.batching.max_concurrent_batches,
            depth=BATCH_QUEUE_DEPTH.labels(entry.name),
        )
        if batching:
            self.reconfigure({"batching": batching})

    def retire(self) -> None:
        """No longer served (unloaded, or replaced by another version): `imgserve_model_info` counts it off. Requests
        that hold it still finish on it."""
        if self._info_labels is not None:
            MODEL_INFO.labels(*self._info_labels).dec()
            self._info_labels = None
        self._queue.close()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Runtime update of the batching block (`user_config: {batching: {...}}`)."""
        merged = {**self.batching.model_dump(), **(user_config.get("batching") or {})}
        self.batching = BatchingConfig.model_validate(merged)
        self._queue.configure(
            self.batching.max_batch_size,
            self.batching.batch_wait_timeout_ms / 1000.0,
            self.batching.max_concurrent_batches,
        )

    def check_tensor(self, tensor: np.ndarray) -> np.ndarray:
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

    async def infer(self, tensor: np.ndarray) -> ModelResult:
        """One image tensor (no batch axis), batched with concurrent callers."""
        return await self._queue.submit(self.check_tensor(tensor), REPLICA_LIMIT.deadline())

    async def _execute(self, items: list[Queued[np.ndarray]]) -> list[ModelResult | BaseException]:
        model = self.entry.name
        start = time.perf_counter()
        for item in items:
            QUEUE_WAIT.labels(model).observe(start - item.enqueued)
        BATCH_SIZE.labels(model).observe(len(items))
        BATCH_FILL.labels(model).observe(len(items) / self.batching.max_batch_size)
        with recorded_batch(model, self.entry.version, [item.enqueued for item in items], start) as mark:

            def run(batch: np.ndarray) -> dict[str, np.ndarray]:
                """The backend's run, timed in the stage thread: waiting for the thread (and, on a busy machine, for
                CPU) is the input phase's, coming back to the event loop the output phase's."""
                mark()
                outputs = self.backend.infer(batch)
                mark()
                return outputs

            outputs = await stage_thread(run, np.stack([item.item for item in items]))
            rows = split_batch(outputs, len(items))
            end = mark()
        STAGE_LATENCY.labels("model", model).observe(end - start)
        model_ms = (end - start) * 1000.0
        return [
            ModelResult(row, {"queue": (start - item.enqueued) * 1000.0, "model": model_ms})
            for item, row in zip(items, rows, strict=True)
        ]

    def info(self) -> dict[str, Any]:
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
