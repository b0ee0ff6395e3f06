"""The backend protocol every model runtime implements.

A backend is created for one model on one replica: `load` once in the deployment's constructor,
then `infer` many times with a batch whose first axis is the batch, and `close` at shutdown.
`infer` is synchronous; the batching layer calls it from a worker thread so the replica's event loop
keeps accepting requests (and forming the next batch) while a batch runs. `unavailable_reason` is a
class-level check, cheap and import-safe, used to pick the first backend that can run here.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from serving.config.model_entry import ModelEntry


class BackendUnavailableError(RuntimeError):
    """No backend in the model's preference list can run on this replica's hardware."""


@dataclass(frozen=True)
class BackendInfo:
    """What model metadata reports about the chosen backend."""

    name: str  # "onnxruntime", "torch", "tensorrt"
    device: str  # "cpu", "cuda:0", ...
    platform: str  # OIP/Triton platform string, e.g. "onnxruntime_onnx"
    precision: str = "fp32"
    detail: str = ""  # e.g. execution providers, engine path


class Backend(Protocol):
    name: ClassVar[str]

    @classmethod
    def unavailable_reason(cls, entry: "ModelEntry") -> str | None:
        """None when this backend can serve `entry` here, else a short reason."""

    def load(self, entry: "ModelEntry") -> None:
        """Load weights and prepare the runtime (sessions, engines, devices)."""

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch (batch axis first); returns every output by name, batch axis first, as numpy (float32;
        ONNX Runtime gives an output its config declares INT64, FP16, UINT8 or BYTES in that type)."""

    def info(self) -> BackendInfo:
        """The chosen runtime, device and precision."""

    def close(self) -> None:
        """Release sessions, engines and device memory."""
