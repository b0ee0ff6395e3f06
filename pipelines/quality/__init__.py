"""Image quality: classical metrics on a normalised working image, tags with evidence, a 0-100 score.

    report = analyze_quality(rgb, original_size=(width, height))
    report.score, report.level, [t.name for t in report.tags], report.metrics.sharpness

The server computes `compute_metrics` on the decode stage's working image and calls `quality_verdict`
(pipelines.quality.verdict) with the learned model's view: the same function `analyze_quality` ends in.

`rgb` may be the full decode or an already reduced one (e.g. a JPEG draft decode): it is shrunk to the
working image here. See docs/QUALITY.md for the metric definitions, the tag vocabulary and the formula.
"""

from pipelines.quality.metrics import QualityMetrics, compute_metrics
from pipelines.quality.scoring import QualityScore, score_quality
from pipelines.quality.tags import Tag, assign_tags
from pipelines.quality.thresholds import Thresholds, default_thresholds, load_thresholds
from pipelines.quality.verdict import LearnedQuality, QualityReport, analyze_quality, learned_quality, quality_verdict
from pipelines.quality.working_image import working_image

__all__ = [
    "LearnedQuality",
    "QualityMetrics",
    "QualityReport",
    "QualityScore",
    "Tag",
    "Thresholds",
    "analyze_quality",
    "assign_tags",
    "compute_metrics",
    "default_thresholds",
    "learned_quality",
    "quality_verdict",
    "load_thresholds",
    "score_quality",
    "working_image",
]
