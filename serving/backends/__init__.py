"""Model backends behind one small protocol (`Backend`): ONNX Runtime, PyTorch and TensorRT."""

from serving.backends.base import Backend, BackendInfo, BackendUnavailableError
from serving.backends.registry import backend_plan, load_backend

__all__ = ["Backend", "BackendInfo", "BackendUnavailableError", "backend_plan", "load_backend"]
