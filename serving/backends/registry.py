"""Pick the first backend in a model's preference list that can run on this replica."""

import logging
from typing import TYPE_CHECKING, Any

from serving.backends.base import Backend, BackendUnavailableError
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.backends.tensorrt_backend import TensorRTBackend
from serving.backends.torch_backend import TorchBackend

if TYPE_CHECKING:
    from serving.config.model_entry import ModelEntry

logger = logging.getLogger(__name__)

BACKENDS: dict[str, type] = {
    OnnxRuntimeBackend.name: OnnxRuntimeBackend,
    TorchBackend.name: TorchBackend,
    TensorRTBackend.name: TensorRTBackend,
}


def backend_plan(entry: "ModelEntry") -> tuple[str | None, list[str]]:
    """(first usable backend name or None, reasons the earlier ones were skipped)."""
    reasons: list[str] = []
    for name in entry.config.backends:
        reason = BACKENDS[name].unavailable_reason(entry)
        if reason is None:
            return name, reasons
        reasons.append(f"{name}: {reason}")
    return None, reasons


def load_backend(entry: "ModelEntry", options: dict[str, dict[str, Any]] | None = None) -> Backend:
    """Instantiate and load the first backend that is available and loads; falls through on load failure."""
    options = options or {}
    reasons: list[str] = []
    for name in entry.config.backends:
        cls = BACKENDS[name]
        reason = cls.unavailable_reason(entry)
        if reason is not None:
            reasons.append(f"{name}: {reason}")
            continue
        backend = cls(**options.get(name, {}))
        try:
            backend.load(entry)
        except Exception as exc:  # noqa: BLE001 - try the next backend, but say why this one failed
            logger.warning("model %s: backend %s failed to load: %s", entry.name, name, exc)
            reasons.append(f"{name}: failed to load ({exc})")
            continue
        logger.info("model %s: using backend %s (%s)", entry.name, name, backend.info())
        return backend
    raise BackendUnavailableError(f"model '{entry.name}': no backend can run it here: {'; '.join(reasons)}")
