"""The one quality verdict: metrics (+ the learned model's outputs) -> score, level and tags with evidence.

The server returns exactly what `quality_verdict` returns (`QualityReport.to_dict()`), for every placement;
the unit tests test this function, and an integration test checks the server's answer against it.
"""

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipelines.quality.metrics import QualityMetrics, compute_metrics
from pipelines.quality.scoring import QualityScore, score_quality
from pipelines.quality.tags import Tag, assign_tags
from pipelines.quality.thresholds import Thresholds, default_thresholds
from pipelines.quality.working_image import native_crop, working_image

logger = logging.getLogger("imgserve.quality")
_BROKEN_MODELS: set[str] = set()  # versions already reported as answering non-finite values


@dataclass(frozen=True)
class LearnedQuality:
    """The learned quality model's view of one image (the `anomaly` result)."""

    score: float  # anomaly score: 0 pristine .. 1 severe (1 - model_quality)
    model_quality: float  # the model's own quality estimate, 0 .. 1
    probabilities: dict[str, float]  # per-distortion probabilities, by tag name
    model_version: str = ""  # "<model>:<version>" of the learned model that produced this

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def learned_quality(
    outputs: Mapping[str, np.ndarray], labels: tuple[str, ...], model_version: str = ""
) -> LearnedQuality | None:
    """The quality model's outputs (`score`: quality 0..1, `probs`: one per label) for one image; None when they
    are not finite numbers (a broken model, e.g. a head fitted on a NaN rating): the verdict is then the classical
    one, as without the model, instead of every quality request failing."""
    quality = float(np.asarray(outputs["score"]).reshape(-1)[0])
    probs = np.asarray(outputs["probs"]).reshape(-1)
    if not (math.isfinite(quality) and np.all(np.isfinite(probs))):
        if model_version not in _BROKEN_MODELS:
            logger.error("quality model %s answers non-finite values: verdicts are classical only", model_version)
        _BROKEN_MODELS.add(model_version)
        return None
    probabilities = {label: round(float(p), 4) for label, p in zip(labels, probs, strict=True)}
    return LearnedQuality(round(1.0 - quality, 4), round(quality, 4), probabilities, model_version)


@dataclass(frozen=True)
class QualityReport:
    """Everything the quality stage says about one image."""

    score: float  # 0 .. 100
    level: str  # LOW, MEDIUM, HIGH, ULTRA
    tags: tuple[Tag, ...]
    metrics: QualityMetrics
    thresholds_version: int | str  # the thresholds' `version`: 4, or "5+1f3a9c0e" from a calibration
    detail: QualityScore  # classical/model parts of the score and the penalty severities
    model_version: str | None = None  # the learned model that joined the verdict ("quality_mos:1"), if any

    def to_dict(self) -> dict[str, Any]:
        """The JSON object HTTP, gRPC and batch results carry as `quality` (docs/QUALITY.md)."""
        return {
            "score": self.score,
            "level": self.level,
            "tags": [asdict(tag) for tag in self.tags],
            "classical_score": self.detail.classical_score,
            "model_score": self.detail.model_score,
            "thresholds_version": self.thresholds_version,
            "model_version": self.model_version,
            "metrics": self.metrics.as_dict(),
        }


def quality_verdict(
    metrics: QualityMetrics, thresholds: Thresholds | None = None, learned: LearnedQuality | None = None
) -> QualityReport:
    """Score, level and tags of one image from its metrics; the learned model's view joins when given."""
    thresholds = thresholds or default_thresholds()
    model_score = learned.model_quality * 100.0 if learned else None
    detail = score_quality(metrics, thresholds, model_score)
    tags = tuple(assign_tags(metrics, thresholds, learned.probabilities if learned else None))
    version = (learned.model_version or None) if learned else None
    return QualityReport(detail.score, detail.level, tags, metrics, thresholds.version, detail, version)


def analyze_quality(
    rgb: np.ndarray,
    original_size: tuple[int, int] | None = None,
    thresholds: Thresholds | None = None,
    learned: LearnedQuality | None = None,
    native_rgb: np.ndarray | None = None,
) -> QualityReport:
    """Metrics and verdict of an HxWx3 uint8 RGB image of any size (shrunk to the working image here).

    `original_size` is the upright (width, height) of the photo as uploaded (default: `rgb`'s own size);
    `native_rgb` a crop of a full-scale decode for the pixel-level metrics (default: taken from `rgb` when `rgb`
    has the original size; otherwise they are None).
    """
    thresholds = thresholds or default_thresholds()
    size = original_size or (rgb.shape[1], rgb.shape[0])
    if native_rgb is None and (rgb.shape[1], rgb.shape[0]) == tuple(size):
        native_rgb = native_crop(rgb)
    metrics = compute_metrics(working_image(rgb, thresholds.working_max_side), size, native_rgb)
    return quality_verdict(metrics, thresholds, learned)
