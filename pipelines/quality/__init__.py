"""Image quality: classical metrics on a normalised working image, tags with evidence, a 0-100 score.

    report = analyze_quality(rgb, original_size=(width, height))
    report.score, report.level, [t.name for t in report.tags], report.metrics.sharpness

`rgb` may be the full decode or an already reduced one (e.g. a JPEG draft decode): it is shrunk to the
working image here. See docs/QUALITY.md for the metric definitions, the tag vocabulary and the formula.
"""

from dataclasses import dataclass

import numpy as np

from pipelines.quality.metrics import QualityMetrics, compute_metrics
from pipelines.quality.scoring import QualityScore, score_quality
from pipelines.quality.tags import Tag, assign_tags
from pipelines.quality.thresholds import Thresholds, default_thresholds, load_thresholds
from pipelines.quality.working_image import native_crop, working_image


@dataclass(frozen=True)
class QualityReport:
    """Everything the quality stage says about one image."""

    score: float  # 0 .. 100
    level: str  # LOW, MEDIUM, HIGH, ULTRA
    tags: tuple[Tag, ...]
    metrics: QualityMetrics
    thresholds_version: int
    detail: QualityScore  # classical/model parts of the score and the penalty severities


def analyze_quality(
    rgb: np.ndarray,
    original_size: tuple[int, int] | None = None,
    thresholds: Thresholds | None = None,
    model_probs: dict[str, float] | None = None,
    model_score: float | None = None,
    native_gray: np.ndarray | None = None,
) -> QualityReport:
    """Score, level, tags and metrics of an HxWx3 uint8 RGB image.

    `original_size` is the upright (width, height) of the photo as uploaded (default: `rgb`'s own size);
    `native_gray` a gray crop of a full-scale decode for blockiness (default: taken from `rgb` when `rgb`
    has the original size; otherwise blockiness is None). `model_probs`/`model_score` come from the
    learned model when present.
    """
    thresholds = thresholds or default_thresholds()
    size = original_size or (rgb.shape[1], rgb.shape[0])
    if native_gray is None and (rgb.shape[1], rgb.shape[0]) == tuple(size):
        native_gray = native_crop(rgb)
    working = working_image(rgb, thresholds.working_max_side)
    metrics = compute_metrics(working, size, native_gray)
    detail = score_quality(metrics, thresholds, model_score)
    tags = tuple(assign_tags(metrics, thresholds, model_probs))
    return QualityReport(detail.score, detail.level, tags, metrics, thresholds.version, detail)


__all__ = [
    "QualityMetrics",
    "QualityReport",
    "QualityScore",
    "Tag",
    "Thresholds",
    "analyze_quality",
    "assign_tags",
    "compute_metrics",
    "load_thresholds",
    "score_quality",
    "working_image",
]
