"""What the served quality path sees of a photo, measured in bulk: the decode stage's tensor for `quality_mos`, the
classifier's pooled activations (`serving.feature_head.feature_graph`, the same graph the served model is built
from) and the classical metrics, for files or encoded bytes.

    config = quality_config()                            # models/quality_mos/config.yaml
    rows = measure_all(items, workers=2)                 # [Measured], items: paths or biq_synthetic.Sample

Every item goes through `pipelines.decode.decode_image` with the model's preprocessing and the thresholds' working
image (JPEG draft decoding allowed, `DecodeLimits()`), exactly as a `/v1/analyze?fields=quality` request; the
features come from the classifier's ONNX graph cut and pooled by the code that builds the served model, so training
and serving cannot drift apart.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from pipelines.decode import DecodedImage, decode_image
from pipelines.errors import ImageInputError
from pipelines.limits import DecodeLimits
from pipelines.quality import compute_metrics
from pipelines.quality.thresholds import default_thresholds
from serving.config.model_config import ModelConfig, load_model_config
from serving.config.model_entry import ModelEntry
from serving.feature_head import feature_graph
from serving.repository import ModelRepository
from tooling.quality.served import CHUNK, Item, item_bytes, item_key, map_chunks

PROJECT_ROOT = Path(__file__).resolve().parents[2]
QUALITY_MODEL_DIR = PROJECT_ROOT / "models" / "quality_mos"
CLASSIFIER = "mobilenet_v2_imagenet"
# Indices among the classifier's 35 Relu6 (Clip) outputs: blocks 1, 2, 4, 7, 11, 15 and the last 1x1 conv.
LAYERS = (1, 4, 8, 14, 22, 30, 34)


@dataclass(frozen=True)
class Measured:
    key: str
    features: np.ndarray  # D float32
    metrics: dict  # QualityMetrics.as_dict()


def quality_config() -> ModelConfig:
    return load_model_config(QUALITY_MODEL_DIR / "config.yaml")


def classifier() -> ModelEntry:
    """The served classifier's repository entry: its weights located and verified as the server does."""
    return ModelRepository.scan(check_backends=False).get(CLASSIFIER)


def feature_session(model: Path, side: int | None, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    graph = feature_graph(onnx.load(str(model)), LAYERS, side)
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


_SESSION: ort.InferenceSession | None = None


def _decode(item: Item, specs: dict, working_max_side: int) -> DecodedImage:
    """`decode_image` of one item; a file it refuses (not an image, too large) is a ValueError naming the file, as the
    labelled-folder calibration names it (the decoder's message alone did not say which of the rated photos)."""
    try:
        return decode_image(item_bytes(item), specs, DecodeLimits(), working_max_side)
    except ImageInputError as exc:
        name = str(item) if isinstance(item, Path) else item_key(item)
        raise ValueError(f"{name}: not a readable image ({exc})") from None


def _measure_chunk(args: tuple[str, Sequence[Item]]) -> list[Measured]:
    global _SESSION
    model_path, items = args
    cv2.setNumThreads(1)
    config = quality_config()
    if _SESSION is None:
        _SESSION = feature_session(Path(model_path), config.input.size[0])
    thresholds = default_thresholds()
    specs = {config.name: config.preprocess_spec()}
    decoded = [_decode(i, specs, thresholds.working_max_side) for i in items]
    batch = np.stack([d.tensors[config.name] for d in decoded]).astype(np.float32)
    features = _SESSION.run(None, {config.input.name: batch})[0]
    return [
        Measured(
            item_key(i), f.astype(np.float32), compute_metrics(d.working, (d.width, d.height), d.native_rgb).as_dict()
        )
        for i, d, f in zip(items, decoded, features, strict=True)
    ]


def measure_all(items: Sequence[Item], workers: int = 2) -> list[Measured]:
    """Features and metrics of every item, in order (`workers` processes, one ORT/OpenCV thread each)."""
    if not items:
        return []
    entry = classifier()
    if not entry.available or entry.artifacts.onnx is None:
        raise RuntimeError(f"{entry.name} is not available: {entry.unavailable_reason or 'no ONNX file'}")
    chunks = [(str(entry.artifacts.onnx), items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)]
    return map_chunks(_measure_chunk, chunks, workers)


def measure_cached(items: Sequence[Item], cache: Path | None, workers: int = 2) -> list[Measured]:
    """`measure_all`, kept in `cache` (an .npz + .json pair) and reused when the keys match."""
    keys = [item_key(i) for i in items]
    if cache is not None and cache.with_suffix(".json").is_file():
        saved = json.loads(cache.with_suffix(".json").read_text())
        if saved["keys"] == keys:
            features = np.load(cache.with_suffix(".npz"))["features"]
            return [Measured(k, f, m) for k, f, m in zip(keys, features, saved["metrics"], strict=True)]
    measured = measure_all(items, workers)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache.with_suffix(".npz"), features=np.stack([m.features for m in measured]))
        cache.with_suffix(".json").write_text(json.dumps({"keys": keys, "metrics": [m.metrics for m in measured]}))
    return measured
