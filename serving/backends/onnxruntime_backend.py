"""ONNX Runtime: the CPU default, with the CUDA execution provider where a GPU and the GPU build exist."""

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from serving import cpus
from serving.backends.base import BackendInfo

if TYPE_CHECKING:
    from serving.config.model_config import ModelConfig
    from serving.config.model_entry import ModelEntry

logger = logging.getLogger(__name__)

# The config's element types as ONNX Runtime names them (NodeArg.type).
ORT_TYPES = {
    "FP32": "tensor(float)",
    "FP16": "tensor(float16)",
    "UINT8": "tensor(uint8)",
    "INT64": "tensor(int64)",
    "BYTES": "tensor(string)",
}

OUTPUT_NUMPY_TYPES = {"FP32": np.float32, "FP16": np.float16, "UINT8": np.uint8, "INT64": np.int64}


def default_intra_op_threads(concurrent_runs: int = 1) -> int:
    """Threads per session: IMGSERVE_ORT_THREADS (a whole number; 0 or unset: the default), else the CPUs this
    process may use (`usable_cpus`) shared among the model's `concurrent_runs` (its `max_concurrent_batches`), at
    least one each (callers sharing cores should set it)."""
    raw = os.environ.get("IMGSERVE_ORT_THREADS", "").strip()
    try:
        threads = int(raw) if raw else 0
    except ValueError:
        threads = -1
    if threads < 0:
        raise ValueError(
            f"IMGSERVE_ORT_THREADS={raw!r}: expected a whole number of threads, 0 or more (0: one per CPU)"
        )
    return threads or max(1, cpus.usable_cpus() // max(1, concurrent_runs))


# Images per ONNX Runtime call on the CPU provider. The dynamic batcher still gathers up to the model's
# max_batch_size (the queueing is unchanged); the backend runs that batch in slices of this many. ORT's CPU arena
# keeps the activations of the largest call for good, and a CPU gains nothing from large calls (`make
# bench-ort-batch`, 2026-12-02: mobilenet_v2 INT8 ~500 img/s at 32, 16 or 8 per call, arena 109 vs 25 MB;
# quality_mos 134 vs 139 img/s, arena 891 vs 217 MB). On a GPU the whole batch is one call.
CPU_RUN_BATCH = 8


def default_cpu_run_batch() -> int:
    """IMGSERVE_ORT_RUN_BATCH (0: the whole batch in one call), else CPU_RUN_BATCH; ValueError naming it for anything
    but a whole number 0 or more (`imgserve serve` refuses to start with it)."""
    raw = os.environ.get("IMGSERVE_ORT_RUN_BATCH")
    if raw is None or raw.strip() == "":
        return CPU_RUN_BATCH
    if not raw.strip().isdecimal():  # a negative count was taken as 0 (one call) without a word
        raise ValueError(f"IMGSERVE_ORT_RUN_BATCH={raw!r}: expected a whole number of images, 0 or more (0: one call)")
    return int(raw)


class OnnxRuntimeBackend:
    name: ClassVar[str] = "onnxruntime"

    def __init__(
        self, intra_op_threads: int | None = None, use_cuda: bool | None = None, cpu_run_batch: int | None = None
    ):
        if intra_op_threads is not None and intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be 0 or more (0: one per CPU), got {intra_op_threads}")
        self._threads_given = intra_op_threads or None
        self.intra_op_threads = intra_op_threads or default_intra_op_threads()  # IMGSERVE_ORT_THREADS checked now
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
        if self._threads_given is None:  # the model's own concurrency, from its config.yaml (not runtime changes)
            self.intra_op_threads = default_intra_op_threads(entry.config.batching.max_concurrent_batches)
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's intra-op threads spin-wait between runs by default: with replicas sharing cores (decode, other
        # models, Ray's own processes) the spinning burns the CPU the other stages need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        want_cuda = self.use_cuda if self.use_cuda is not None else "CUDAExecutionProvider" in available
        session = None
        if want_cuda:  # on a GPU the float graph runs
            cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            session = ort.InferenceSession(str(entry.artifacts.onnx), options, providers=cuda)
            if session.get_providers()[0] != "CUDAExecutionProvider":
                # The GPU build starts on the CPU when CUDA or cuDNN cannot be loaded (its log says which library)
                # or no device is visible: serve as the CPU build would, INT8 and sliced batches, not the float
                # graph in whole batches.
                logger.warning(
                    "model %s: ONNX Runtime's CUDA provider did not start (see ONNX Runtime's message above); "
                    "serving on the CPU",
                    entry.config.name,
                )
                want_cuda, session = False, None
        # The INT8 variant is built and checked for ORT's CPU kernels.
        int8 = entry.artifacts.onnx_int8 if not want_cuda else None
        self._precision = "int8" if int8 is not None else "fp32"
        self._session = session or ort.InferenceSession(
            str(int8 or entry.artifacts.onnx), options, providers=["CPUExecutionProvider"]
        )
        fixed_batch = check_graph(entry.config, self._session.get_inputs(), self._session.get_outputs())
        self._run_batch = fixed_batch or (0 if want_cuda else max(0, self.cpu_run_batch))
        self._input_name = entry.config.input.name
        self._output_names = [o.name for o in self._session.get_outputs()]
        declared = {o.name: o.dtype for o in entry.config.outputs}
        self._output_dtypes = [declared.get(name, "FP32") for name in self._output_names]

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
            name: _as_declared(value, dtype)
            for name, value, dtype in zip(self._output_names, results, self._output_dtypes, strict=True)
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


def _shape(dims: Sequence[Any]) -> str:
    """A graph tensor's shape as `[N,3,32,32]` (a named or unknown axis by its name, or `?`)."""
    return "[" + ",".join(str(d) if d is not None else "?" for d in dims) + "]"


def _dims_differ(expected: Sequence[int], graph: Sequence[Any]) -> bool:
    """Whether a config's per-item shape contradicts a graph tensor's shape (batch axis first): another rank, or a
    fixed axis of another size. A named or unknown axis takes any size; no shape at all (ONNX Runtime's `[]` for an
    unknown rank) is not checked."""
    if not graph:
        return False
    items = list(graph)[1:]
    return len(items) != len(expected) or any(
        isinstance(g, int) and g != e for g, e in zip(items, expected, strict=True)
    )


def _as_declared(value: Any, dtype: str) -> np.ndarray:
    """An output as its config declares it (the graph's own type: `check_graph` compares them): FP32 as before;
    INT64, FP16, UINT8 kept (they were all made float32, so a metadata that said INT64 came with FP32 data, and
    int64 values above 2**24 lost digits); a string output as UTF-8 bytes elements (OIP BYTES)."""
    if dtype == "BYTES":
        array = np.asarray(value, dtype=np.object_)
        return np.vectorize(lambda item: item.encode() if isinstance(item, str) else bytes(item), otypes=[object])(
            array
        )
    return np.asarray(value, dtype=OUTPUT_NUMPY_TYPES[dtype])


def check_graph(config: "ModelConfig", inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """Compare `config` with the graph's inputs and outputs (ONNX Runtime NodeArgs: name, shape, type). Raises
    ValueError naming every difference (a model that loads but fails each request is worse than one refused at
    load); returns the graph's fixed batch size when its batch axis is fixed at 1 (run one image per call), else 0."""
    spec = config.input
    problems: list[str] = []
    graph_inputs = {i.name: i for i in inputs}
    graph = graph_inputs.get(spec.name)
    described = ", ".join(f"'{i.name}' {_shape(i.shape)} {i.type}" for i in inputs)
    fixed_batch = 0
    if graph is None:
        problems.append(f"input '{spec.name}' is not a graph input (the graph takes {described})")
    else:
        wanted = f"config input '{spec.name}' [N,{','.join(map(str, spec.shape))}] {spec.dtype} {spec.layout}"
        if _dims_differ(spec.shape, graph.shape) or graph.type != ORT_TYPES[spec.dtype]:
            problems.append(f"{wanted} does not match graph input '{graph.name}' {_shape(graph.shape)} {graph.type}")
        batch = graph.shape[0] if graph.shape else None
        if isinstance(batch, int) and batch != 1:
            problems.append(
                f"graph input '{graph.name}' has its batch axis fixed at {batch}: export it with a "
                "dynamic batch axis (batches of 1 to max_batch_size are run)"
            )
        fixed_batch = 1 if batch == 1 else 0
    problems += [
        f"graph input '{name}' is not fed (only '{spec.name}' is)"
        for name in graph_inputs
        if name != spec.name and graph is not None
    ]
    graph_outputs = {o.name: o for o in outputs}
    for output in config.outputs:
        found = graph_outputs.get(output.name)
        if found is None:
            names = ", ".join(f"'{name}'" for name in graph_outputs)
            problems.append(f"output '{output.name}' is not a graph output (the graph's: {names})")
        elif _dims_differ(output.shape, found.shape):
            problems.append(
                f"config output '{output.name}' [N,{','.join(map(str, output.shape))}] does not match "
                f"the graph's {_shape(found.shape)}"
            )
        elif found.type != ORT_TYPES[output.dtype] and (output.dtype, found.type) != ("FP32", "tensor(float16)"):
            # a float16 output under the default FP32 is served cast to float32, as before outputs kept their types
            problems.append(f"config output '{output.name}' is {output.dtype}, the graph's is {found.type}")
    if problems:
        raise ValueError(f"config.yaml does not match the ONNX graph: {'; '.join(problems)}")
    return fixed_batch
