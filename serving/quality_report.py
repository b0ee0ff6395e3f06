"""Joins the quality stage's metrics and the learned model's outputs into the `quality` and `anomaly` results."""

import os
from dataclasses import asdict
from functools import lru_cache
from typing import Any

import numpy as np

from pipelines.quality import QualityMetrics, Thresholds, assign_tags, load_thresholds, score_quality

QUALITY_MODEL = "quality_net"


@lru_cache(maxsize=1)
def thresholds() -> Thresholds:
    """The versioned thresholds: IMGSERVE_QUALITY_THRESHOLDS (e.g. from `imgserve quality calibrate`) or the default."""
    return load_thresholds(os.environ.get("IMGSERVE_QUALITY_THRESHOLDS") or None)


def anomaly_result(outputs: dict[str, np.ndarray], labels: tuple[str, ...]) -> dict[str, Any]:
    """The learned model's view: per-distortion probabilities and an anomaly score (0 pristine .. 1 severe)."""
    quality = float(np.asarray(outputs["score"]).reshape(-1)[0])
    probabilities = {label: round(float(p), 4) for label, p in zip(labels, np.asarray(outputs["probs"]), strict=True)}
    return {"score": round(1.0 - quality, 4), "model_quality": round(quality, 4), "probabilities": probabilities}


def quality_result(metrics: QualityMetrics, anomaly: dict[str, Any] | None) -> dict[str, Any]:
    """Score 0-100, level, tags with evidence and the metrics; the model's probabilities join when present."""
    limits = thresholds()
    model_probs = anomaly["probabilities"] if anomaly else None
    model_score = anomaly["model_quality"] * 100.0 if anomaly else None
    detail = score_quality(metrics, limits, model_score)
    tags = assign_tags(metrics, limits, model_probs)
    return {
        "score": detail.score,
        "level": detail.level,
        "tags": [asdict(tag) for tag in tags],
        "classical_score": detail.classical_score,
        "model_score": detail.model_score,
        "thresholds_version": limits.version,
        "metrics": metrics.as_dict(),
    }
