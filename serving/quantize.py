"""The INT8 variant of a float ONNX classifier: built by `imgserve models prepare`, checked, then served on CPU.

Static quantisation with ONNX Runtime's own tool (`quantize_static`): QDQ format, uint8 activations and int8
per-channel weights (the pair ORT's x86 kernels run fastest without VNNI), MinMax activation ranges from photos
of `int8.calibration` (a seeded sample, decoded and preprocessed exactly as the server does). The result is
checked on `int8.accuracy` (other photos, with known classes): top-1 of float and INT8 side by side, their
top-1 agreement and model-only throughput, written next to the model as JSON. The repository serves the INT8
file only when that report says it passed (`min_top1_ratio` of float's top-1, MLPerf's 99 % rule).

Both files live in the cache directory: build outputs, never committed.
"""

import json
import logging
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipelines.decode import decode_image
from pipelines.errors import ImageInputError
from pipelines.preprocess import PreprocessSpec
from serving.config.model_config import ModelConfig
from serving.config.settings import ServerSettings

logger = logging.getLogger(__name__)

# Bump when the recipe changes: old builds are then ignored and rebuilt. 2: calibration and the accuracy check use
# the served preprocessing (only the crop resampled, fused normalisation). 3: `uint8_weight_convs` (the stem's
# weights in uint8: no 16-bit saturation on CPUs without VNNI). 4: the output head (logits, softmax) in float.
QUANT_VERSION = 4
BATCH = 16
THROUGHPUT_SECONDS = 3.0
# Not serving.collections.sources.is_image_name: the repository imports this module, and that package imports
# serving.errors, which imports the repository (tests/unit/test_layout.py forbids the cycle).
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Int8Report:
    """What the build measured; `passed` decides whether the INT8 file is served."""

    model: str
    float_top1: float
    int8_top1: float
    top1_agreement: float  # share of photos where float and INT8 pick the same class
    images: int  # photos the check ran on
    check_folder: str
    calibration_folder: str
    calibration_images: int
    float_images_per_s: float  # model only, batch 16, this machine, during the build
    int8_images_per_s: float
    min_top1_ratio: float
    passed: bool
    onnxruntime: str
    quant_version: int = QUANT_VERSION
    uint8_weight_convs: int = 0
    cpu_vnni: bool | None = None  # whether the building CPU has VNNI (int8 dot products without 16-bit saturation)

    def summary(self) -> str:
        verdict = "passed" if self.passed else f"FAILED (needs >= {self.min_top1_ratio:.0%} of float's top-1)"
        return (
            f"INT8 top-1 {self.int8_top1:.1%} vs float {self.float_top1:.1%} on {self.images} photos "
            f"(agreement {self.top1_agreement:.1%}), {self.int8_images_per_s:.0f} vs {self.float_images_per_s:.0f} "
            f"img/s: {verdict}"
        )


def int8_paths(config: ModelConfig, settings: ServerSettings) -> tuple[Path, Path]:
    """(INT8 ONNX, its report) in the cache directory, keyed by the float weights and the recipe version."""
    stem = settings.cache_dir / "onnx" / f"{config.name}-{config.weights.sha256[:8]}-int8-q{QUANT_VERSION}"
    return stem.with_suffix(".onnx"), stem.with_suffix(".json")


def read_int8_report(config: ModelConfig, settings: ServerSettings) -> Int8Report | None:
    """The report of a finished build, or None (never built, an older recipe, or unreadable)."""
    _, report = int8_paths(config, settings)
    try:
        fields = json.loads(report.read_text())
        return Int8Report(**fields) if fields.get("quant_version") == QUANT_VERSION else None
    except (OSError, ValueError, TypeError):
        return None


def served_int8(config: ModelConfig, settings: ServerSettings) -> Path | None:
    """The INT8 file to serve on CPU: configured, built and passed; None means float."""
    if config.int8 is None or not config.int8.serve:
        return None
    onnx, _ = int8_paths(config, settings)
    report = read_int8_report(config, settings)
    return onnx if report is not None and report.passed and onnx.is_file() else None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())


def _tensors(paths: list[Path], spec: PreprocessSpec) -> tuple[np.ndarray, list[int]]:
    """The server's own decode + preprocessing of each photo; indices of those that decoded."""
    tensors, kept = [], []
    for index, path in enumerate(paths):
        try:
            tensors.append(decode_image(path.read_bytes(), spec).tensor)
        except ImageInputError as exc:
            logger.warning("skipping %s: %s", path.name, exc)
            continue
        kept.append(index)
    return np.stack(tensors), kept


def _labelled(
    config: ModelConfig, settings: ServerSettings, spec: PreprocessSpec, weights_folder: Path
) -> tuple[np.ndarray, np.ndarray]:
    assert config.int8 is not None
    check = config.int8.accuracy
    ids = (weights_folder / check.class_ids).read_text().split()
    index_of = {class_id: check.first_index + i for i, class_id in enumerate(ids)}
    paths = [p for p in _images(settings.data_dir / check.folder) if p.name.split("_", 1)[0] in index_of]
    if not paths:
        raise FileNotFoundError(f"no photos named '<class id>_...' in {settings.data_dir / check.folder}")
    tensors, kept = _tensors(paths, spec)
    return tensors, np.array([index_of[paths[i].name.split("_", 1)[0]] for i in kept])


def _session(path: Path):  # noqa: ANN202 - onnxruntime is imported lazily
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _predict(session, tensors: np.ndarray) -> np.ndarray:  # noqa: ANN001
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: tensors[i : i + BATCH]})[0] for i in range(0, len(tensors), BATCH)]
    return np.concatenate(outputs).argmax(axis=1)


def _images_per_s(session, tensors: np.ndarray) -> float:  # noqa: ANN001
    name, batch = session.get_inputs()[0].name, tensors[:BATCH]
    session.run(None, {name: batch})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < THROUGHPUT_SECONDS:
        session.run(None, {name: batch})
        done += len(batch)
    return done / (time.perf_counter() - start)


def cpu_has_vnni() -> bool | None:
    """Whether this CPU has AVX-512 VNNI or AVX-VNNI (None: not an x86 Linux that says)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    return bool({"avx512_vnni", "avx_vnni"} & set(flags.split()))


def uint8_weight_overrides(model_path: Path, count: int) -> dict[str, list[dict[str, object]]]:
    """ORT's `TensorQuantOverrides` giving the weights of the first `count` Conv nodes (graph order) uint8."""
    import onnx
    from onnxruntime.quantization import QuantType

    if count == 0:
        return {}
    graph = onnx.load(str(model_path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    convs = [node.input[1] for node in graph.node if node.op_type == "Conv" and node.input[1] in weights]
    return {name: [{"quant_type": QuantType.QUInt8, "symmetric": False}] for name in convs[:count]}


def output_head_nodes(model_path: Path) -> list[str]:
    """The nodes from the last Conv/Gemm/MatMul to the graph's outputs (logits, reshape, softmax), kept in float.

    Quantised, ORT's QDQ Softmax writes probabilities in steps of 1/255 (every class below 0.2 % reads 0.0, so the
    top-k after the first few classes came out in index order) and the logits in steps of ~0.1. The head is one 1x1
    conv on pooled features: a rounding error of the model's cost in float."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    head: list[str] = []
    pending = [output.name for output in graph.output]
    while pending:
        node = producer.get(pending.pop())
        if node is None or node.name in head:
            continue
        head.append(node.name)
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            pending.extend(name for name in node.input if name in producer)
    return head


def build_int8(config: ModelConfig, float_onnx: Path, settings: ServerSettings) -> Int8Report:
    """Quantise `float_onnx`, check it, write the INT8 file and its report to the cache directory."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    assert config.int8 is not None
    recipe, spec = config.int8, config.preprocess_spec()
    folder = settings.data_dir / recipe.calibration.folder
    photos = _images(folder)
    if len(photos) < recipe.calibration.images:
        raise FileNotFoundError(f"{folder}: {len(photos)} photos, the calibration needs {recipe.calibration.images}")
    sample = sorted(random.Random(0).sample(photos, recipe.calibration.images))
    calibration, _ = _tensors(sample, spec)
    input_name = config.input.name

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(range(0, len(calibration), BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._batches, None)
            return None if start is None else {input_name: calibration[start : start + BATCH]}

    target, report_path = int8_paths(config, settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        prepared, quantised = Path(work) / "prepared.onnx", Path(work) / "int8.onnx"
        quant_pre_process(str(float_onnx), str(prepared))
        overrides = uint8_weight_overrides(prepared, recipe.uint8_weight_convs)
        quantize_static(
            str(prepared),
            str(quantised),
            Batches(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=output_head_nodes(prepared),
            extra_options={"TensorQuantOverrides": overrides} if overrides else {},
        )
        tensors, labels = _labelled(config, settings, spec, float_onnx.parent)
        float_session, int8_session = _session(float_onnx), _session(quantised)
        float_pred, int8_pred = _predict(float_session, tensors), _predict(int8_session, tensors)
        float_top1, int8_top1 = float(np.mean(float_pred == labels)), float(np.mean(int8_pred == labels))
        report = Int8Report(
            model=config.name,
            float_top1=float_top1,
            int8_top1=int8_top1,
            top1_agreement=float(np.mean(float_pred == int8_pred)),
            images=len(labels),
            check_folder=recipe.accuracy.folder,
            calibration_folder=recipe.calibration.folder,
            calibration_images=len(calibration),
            float_images_per_s=_images_per_s(float_session, tensors),
            int8_images_per_s=_images_per_s(int8_session, tensors),
            min_top1_ratio=recipe.min_top1_ratio,
            passed=int8_top1 >= recipe.min_top1_ratio * float_top1,
            onnxruntime=ort.__version__,
            uint8_weight_convs=recipe.uint8_weight_convs,
            cpu_vnni=cpu_has_vnni(),
        )
        quantised.replace(target)
    report_path.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
