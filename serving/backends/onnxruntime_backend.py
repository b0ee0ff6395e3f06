"""ONNX Runtime: the CPU default, with the CUDA execution provider where a GPU and the GPU build exist."""

import os
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from serving.backends.base import BackendInfo

if TYPE_CHECKING:
    from serving.config.model_entry import ModelEntry


def default_intra_op_threads() -> int:
    """Threads per session: IMGSERVE_ORT_THREADS, else every core (callers sharing cores should set it)."""
    return int(os.environ.get("IMGSERVE_ORT_THREADS", "0")) or (os.cpu_count() or 1)


# Images per ONNX Runtime call on the CPU provider. The dynamic batcher still gathers up to the model's
# max_batch_size (the queueing is unchanged); the backend runs that batch in slices of this many. ORT's CPU arena
# keeps the activations of the largest call for good, and a CPU gains nothing from large calls (`make
# bench-ort-batch`, 2026-12-02: mobilenet_v2 INT8 ~500 img/s at 32, 16 or 8 per call, arena 109 vs 25 MB;
# quality_mos 134 vs 139 img/s, arena 891 vs 217 MB). On a GPU the whole batch is one call.
CPU_RUN_BATCH = 8


def default_cpu_run_batch() -> int:
    """IMGSERVE_ORT_RUN_BATCH (0: the whole batch in one call), else CPU_RUN_BATCH."""
    raw = os.environ.get("IMGSERVE_ORT_RUN_BATCH")
    if raw is None or raw.strip() == "":
        return CPU_RUN_BATCH
    try:
        return max(0, int(raw))
    except ValueError:
        raise ValueError(f"IMGSERVE_ORT_RUN_BATCH={raw!r}: expected a whole number of images (0: one call)") from None


class OnnxRuntimeBackend:
    name: ClassVar[str] = "onnxruntime"

    def __init__(
        self, intra_op_threads: int | None = None, use_cuda: bool | None = None, cpu_run_batch: int | None = None
    ):
        self.intra_op_threads = intra_op_threads or default_intra_op_threads()
        self.use_cuda = use_cuda
        self.cpu_run_batch = default_cpu_run_batch() if cpu_run_batch is None else cpu_run_batch
        self._run_batch = 0  # images per session.run once loaded; 0: the whole batch
        self._session = None
        self._input_name = ""
        self._output_names: list[str] = []
        self._precision = "fp32"

    @classmethod
    def unavailable_reason(cls, entry: "ModelEntry") -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed"
        if entry.artifacts.onnx is None:
            return "no ONNX file (run `imgserve models prepare` to export it)"
        return None

    def load(self, entry: "ModelEntry") -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's intra-op threads spin-wait between runs by default: with replicas sharing cores (decode, other
        # models, Ray's own processes) the spinning burns the CPU the other stages need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        want_cuda = self.use_cuda if self.use_cuda is not None else "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        # The INT8 variant is built and checked for ORT's CPU kernels; on a GPU the float graph runs.
        int8 = entry.artifacts.onnx_int8 if not want_cuda else None
        self._precision = "int8" if int8 is not None else "fp32"
        self._session = ort.InferenceSession(str(int8 or entry.artifacts.onnx), options, providers=providers)
        self._run_batch = 0 if want_cuda else max(0, self.cpu_run_batch)
        self._input_name = self._session.get_inputs()[0].name
        self._output_names = [o.name for o in self._session.get_outputs()]

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self._session is None:
            raise RuntimeError("backend is not loaded")
        step = self._run_batch or len(batch)
        if len(batch) <= step:
            results = self._session.run(self._output_names, {self._input_name: batch})
        else:
            feeds = ({self._input_name: batch[i : i + step]} for i in range(0, len(batch), step))
            parts = [self._session.run(self._output_names, feed) for feed in feeds]
            results = [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]
        return {
            name: np.asarray(value, dtype=np.float32) for name, value in zip(self._output_names, results, strict=True)
        }

    def info(self) -> BackendInfo:
        providers = self._session.get_providers() if self._session is not None else []
        device = "cuda:0" if providers and providers[0] == "CUDAExecutionProvider" else "cpu"
        return BackendInfo(
            name=self.name,
            device=device,
            platform="onnxruntime_onnx",
            precision=self._precision,
            detail=f"providers={','.join(providers)} intra_op_threads={self.intra_op_threads}"
            + (f" run_batch={self._run_batch}" if self._run_batch else ""),
        )

    def close(self) -> None:
        self._session = None
