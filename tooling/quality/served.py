"""The served quality path for batch tools: what `/v1/analyze?fields=quality` returns, for files or encoded bytes.

    results = served_quality(items, workers=2)     # items: paths, biq_synthetic.Sample or (key, bytes)
    results[0].served.tags, results[0].classical.score, results[0].metrics

Per item: `pipelines.decode.decode_image` with the learned model's preprocessing and the thresholds' working image
(reduced JPEG decode allowed, `DecodeLimits()`), `compute_metrics`, the learned model (`serving.service.QUALITY_MODEL`,
the grafted ONNX graph from the repository) through the server's `OnnxRuntimeBackend` in batches, then
`quality_verdict(metrics, thresholds, learned)` (`served`) and `quality_verdict(metrics, thresholds)` (`classical`,
what a server without the model returns). Worker processes, one ORT/OpenCV thread each.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from pipelines.decode import decode_image
from pipelines.limits import DecodeLimits
from pipelines.quality import QualityReport, compute_metrics, learned_quality, quality_verdict
from pipelines.quality.thresholds import Thresholds, load_thresholds
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.config.model_entry import ModelEntry
from serving.repository import scan_for_one
from serving.service import QUALITY_MODEL
from tooling.quality.biq_synthetic import Sample

Item = Path | Sample | tuple[str, bytes]
CHUNK = 16  # items per worker task (one ONNX Runtime batch)
R = TypeVar("R")


@dataclass(frozen=True)
class ServedResult:
    key: str
    decode_scale: int
    metrics: dict
    model_quality: float | None
    model_probs: dict[str, float] | None  # the model's per-tag probabilities (to re-tag with other thresholds)
    served: QualityReport
    classical: QualityReport


def item_key(item: Item) -> str:
    if isinstance(item, Sample):
        return item.key
    return item[0] if isinstance(item, tuple) else f"{item.name}|file"


def item_bytes(item: Item) -> bytes:
    if isinstance(item, Sample):
        return item.encode()
    return item[1] if isinstance(item, tuple) else item.read_bytes()


def load_model(threads: int = 1) -> tuple[ModelEntry, OnnxRuntimeBackend]:
    entry = scan_for_one(QUALITY_MODEL)
    if not entry.available:
        raise SystemExit(f"{QUALITY_MODEL} is not servable: {entry.unavailable_reason}")
    backend = OnnxRuntimeBackend(intra_op_threads=threads)
    backend.load(entry)
    return entry, backend


_MODEL: tuple[ModelEntry, OnnxRuntimeBackend] | None = None


def _chunk(args: tuple[str | None, bool, Sequence[Item]]) -> list[ServedResult]:
    global _MODEL
    thresholds_path, use_model, items = args
    cv2.setNumThreads(1)
    thresholds = load_thresholds(thresholds_path)
    if use_model and _MODEL is None:
        _MODEL = load_model()
    specs = {QUALITY_MODEL: _MODEL[0].config.preprocess_spec()} if use_model and _MODEL else {}
    decoded = [decode_image(item_bytes(i), specs, DecodeLimits(), thresholds.working_max_side) for i in items]
    learned = [None] * len(items)
    if use_model and _MODEL:
        entry, backend = _MODEL
        out = backend.infer(np.stack([d.tensors[QUALITY_MODEL] for d in decoded]))
        learned = [
            learned_quality({"probs": p, "score": s}, entry.labels, f"{QUALITY_MODEL}:{entry.config.version}")
            for p, s in zip(out["probs"], out["score"], strict=True)
        ]
    results = []
    for item, d, model in zip(items, decoded, learned, strict=True):
        metrics = compute_metrics(d.working, (d.width, d.height), d.native_rgb)
        results.append(
            ServedResult(
                item_key(item),
                d.decode_scale,
                metrics.as_dict(),
                model.model_quality if model else None,
                model.probabilities if model else None,
                quality_verdict(metrics, thresholds, model),
                quality_verdict(metrics, thresholds),
            )
        )
    return results


def served_quality(
    items: Sequence[Item], thresholds: Path | None = None, use_model: bool = True, workers: int = 2
) -> list[ServedResult]:
    """Served and classical verdicts of every item, in order."""
    path = str(thresholds) if thresholds else None
    return map_chunks(_chunk, [(path, use_model, items[i : i + CHUNK]) for i in range(0, len(items), CHUNK)], workers)


def map_chunks(function: Callable[[Any], list[R]], chunks: Sequence[Any], workers: int) -> list[R]:
    """`function` over `chunks` (each call returns a list), concatenated in order: in this process when `workers`
    <= 1 (tests, small sets), else in that many spawned processes, printing progress every ~400 results."""
    if workers <= 1:
        return [r for chunk in chunks for r in function(chunk)]
    out: list[R] = []
    with get_context("spawn").Pool(workers) as pool:
        for done in pool.imap(function, chunks):
            out.extend(done)
            if len(out) % (CHUNK * 25) < len(done):
                print(f"  {len(out)} done", flush=True)
    return out


def defects(report: QualityReport, thresholds: Thresholds) -> list[str]:
    return [t.name for t in report.tags if thresholds.tags[t.name].kind == "defect"]
