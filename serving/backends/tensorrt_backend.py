"""TensorRT (10.x API): an FP16 engine built from the model's ONNX with a dynamic-batch optimisation profile.

Engines are cached under `<cache_dir>/tensorrt/`, keyed by the ONNX file's hash, the GPU name, the
TensorRT version, the batch profile and the precision: a serialized engine is only valid for those.
Device buffers are torch CUDA tensors, so no extra CUDA binding package is needed.
"""

import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from serving.backends.base import BackendInfo

if TYPE_CHECKING:
    from serving.config.model_entry import ModelEntry

logger = logging.getLogger(__name__)


def engine_cache_path(
    cache_dir: Path, model: str, onnx_sha256: str, gpu_name: str, trt_version: str, max_batch: int, fp16: bool = True
) -> Path:
    """Where the engine for this (model file, GPU, TensorRT version, profile, precision) lives."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    precision = "fp16" if fp16 else "fp32"
    return cache_dir / "tensorrt" / f"{model}-{onnx_sha256[:12]}-{gpu}-trt{trt_version}-{precision}-b{max_batch}.engine"


class TensorRTBackend:
    name: ClassVar[str] = "tensorrt"

    def __init__(self, fp16: bool = True, workspace_bytes: int = 4 << 30):
        self.fp16 = fp16
        self.workspace_bytes = workspace_bytes
        self._engine: Any = None
        self._context: Any = None
        self._input_name = ""
        self._output_names: list[str] = []
        self._max_batch = 1
        self._engine_path: Path | None = None

    @classmethod
    def unavailable_reason(cls, entry: "ModelEntry") -> str | None:
        if importlib.util.find_spec("tensorrt") is None:
            return "tensorrt is not installed"
        if importlib.util.find_spec("torch") is None:
            return "tensorrt backend needs torch for CUDA buffers"
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device"
        if entry.artifacts.onnx is None:
            return "no ONNX file to build an engine from (run `imgserve models prepare`)"
        return None

    def _build_engine(self, trt: Any, entry: "ModelEntry", path: Path) -> bytes:
        log = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(log)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, log)
        if not parser.parse(Path(entry.artifacts.onnx).read_bytes()):  # type: ignore[arg-type]
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {entry.artifacts.onnx}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        batching = entry.config.batching
        opt = max(batching.preferred_batch_sizes or [batching.max_batch_size])
        per_image = tuple(entry.config.input.shape)
        profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        profile.set_shape(name, (1, *per_image), (opt, *per_image), (batching.max_batch_size, *per_image))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine for {entry.name}")
        data = bytes(serialized)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: replicas building at once never read half an engine
        return data

    def load(self, entry: "ModelEntry") -> None:
        import tensorrt as trt
        import torch

        from serving.config.settings import ServerSettings
        from serving.weights import sha256_of

        settings = ServerSettings.from_env()
        self._max_batch = entry.config.batching.max_batch_size
        path = engine_cache_path(
            settings.cache_dir,
            entry.name,
            sha256_of(Path(entry.artifacts.onnx)),  # type: ignore[arg-type]
            torch.cuda.get_device_name(0),
            trt.__version__,
            self._max_batch,
            self.fp16,
        )
        data = path.read_bytes() if path.is_file() else self._build_engine(trt, entry, path)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise RuntimeError(f"could not deserialize TensorRT engine {path}")
        self._context = self._engine.create_execution_context()
        self._engine_path = path
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._input_name = inputs[0]
        self._output_names = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import tensorrt as trt
        import torch

        torch_dtypes = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int32: torch.int32,
            trt.int64: torch.int64,
        }
        x = torch.from_numpy(np.ascontiguousarray(batch)).cuda(non_blocking=True)
        want = torch_dtypes[self._engine.get_tensor_dtype(self._input_name)]
        x = x.to(want)
        self._context.set_input_shape(self._input_name, tuple(x.shape))
        self._context.set_tensor_address(self._input_name, x.data_ptr())
        outputs: dict[str, Any] = {}
        for name in self._output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            buf = torch.empty(shape, dtype=torch_dtypes[self._engine.get_tensor_dtype(name)], device="cuda")
            self._context.set_tensor_address(name, buf.data_ptr())
            outputs[name] = buf
        stream = torch.cuda.current_stream()
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return {name: buf.float().cpu().numpy() for name, buf in outputs.items()}

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self._context is None:
            raise RuntimeError("backend is not loaded")
        if len(batch) <= self._max_batch:
            return self._run(batch)
        parts = [self._run(batch[i : i + self._max_batch]) for i in range(0, len(batch), self._max_batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self._output_names}

    def info(self) -> BackendInfo:
        return BackendInfo(
            name=self.name,
            device="cuda:0",
            platform="tensorrt_plan",
            precision="fp16" if self.fp16 else "fp32",
            detail=f"engine={self._engine_path}",
        )

    def close(self) -> None:
        self._context = None
        self._engine = None
