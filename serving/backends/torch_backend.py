"""PyTorch: TorchScript files or torchvision architectures with a state dict; CUDA with fp16 when present."""

import importlib
import os
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from serving.backends.base import BackendInfo

if TYPE_CHECKING:
    from serving.config.model_entry import ModelEntry


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def torch_threads() -> int:
    """IMGSERVE_TORCH_THREADS: torch's intra-op threads, a whole number (0 or unset: torch's default)."""
    raw = os.environ.get("IMGSERVE_TORCH_THREADS", "").strip()
    if not raw.isdecimal():
        if not raw:
            return 0
        raise ValueError(
            f"IMGSERVE_TORCH_THREADS={raw!r}: expected a whole number of threads, 0 or more (0: torch's default)"
        )
    return int(raw)


class TorchBackend:
    name: ClassVar[str] = "torch"

    def __init__(self, device: str | None = None, fp16: bool | None = None, threads: int | None = None):
        self.requested_device = device
        self.fp16 = fp16
        self.threads = threads or torch_threads() or None
        self._model: Any = None
        self._device = "cpu"
        self._half = False
        self._output_names: list[str] = []

    @classmethod
    def unavailable_reason(cls, entry: "ModelEntry") -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed"
        if entry.artifacts.torchscript is not None:
            return None
        if entry.artifacts.state_dict is None or entry.config.export is None:
            return "torch needs a TorchScript file or a torchvision state dict"
        if entry.config.export.source == "torchvision":
            try:
                importlib.import_module("torchvision.models")
            except Exception as exc:  # noqa: BLE001 - a broken torchvision raises RuntimeError, not ImportError
                return f"torchvision is not importable ({type(exc).__name__}: {str(exc)[:120]})"
        return None

    def _build(self, entry: "ModelEntry") -> Any:
        import torch

        if entry.artifacts.torchscript is not None:
            return torch.jit.load(str(entry.artifacts.torchscript), map_location="cpu")
        assert entry.config.export is not None and entry.artifacts.state_dict is not None
        models = importlib.import_module("torchvision.models")
        model = getattr(models, entry.config.export.architecture)(weights=None)
        model.load_state_dict(torch.load(entry.artifacts.state_dict, map_location="cpu", weights_only=True))
        return model

    def load(self, entry: "ModelEntry") -> None:
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        self._device = self.requested_device or ("cuda:0" if _cuda_available() else "cpu")
        self._half = self.fp16 if self.fp16 is not None else self._device.startswith("cuda")
        model = self._build(entry).eval().to(self._device)
        if self._half:
            model = model.half()
        if self._device.startswith("cuda"):
            model = model.to(memory_format=torch.channels_last)
        self._model = model
        self._output_names = [o.name for o in entry.config.outputs]

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        if self._model is None:
            raise RuntimeError("backend is not loaded")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device, non_blocking=True)
            if self._half:
                x = x.half()
            out = self._model(x)
            outputs = out if isinstance(out, (tuple, list)) else (out,)
            arrays = [o.float().cpu().numpy() for o in outputs]
        return dict(zip(self._output_names, arrays, strict=True))

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            device=self._device,
            platform="pytorch_libtorch",
            precision="fp16" if self._half else "fp32",
            detail=f"threads={self.threads or 'default'}",
        )

    def close(self) -> None:
        self._model = None
        if self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
