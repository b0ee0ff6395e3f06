"""One 0-100 quality score and a level (LOW, MEDIUM, HIGH, ULTRA) from the classical metrics.

Formula (all numbers from the thresholds config, section ``score``):

    severity_i = clip((metric_i - best_i) / (worst_i - best_i), 0, 1)   # 0 at `best`, 1 at `worst`
    classical  = 100 * prod_i (1 - weight_i * severity_i)
    score      = classical                                              # without a model
    score      = (1 - w) * classical + w * model_score                  # w = model.score_weight

A defect-free photo scores 100; each defect removes at most its weight's share of what is left, so
several defects compound. The level is the highest one whose cut-off (``score.levels``) the score reaches.
"""

import math
from dataclasses import dataclass, field

from pipelines.quality.metrics import QualityMetrics
from pipelines.quality.thresholds import Penalty, Thresholds, default_thresholds


@dataclass(frozen=True)
class QualityScore:
    """The score, its level and how it was made."""

    score: float  # 0 .. 100
    level: str  # LOW, MEDIUM, HIGH or ULTRA
    classical_score: float  # 0 .. 100, from the metrics alone
    model_score: float | None  # 0 .. 100 from a learned model, when given
    severities: dict[str, float] = field(default_factory=dict)  # penalty name -> 0 .. 1, non-zero ones only


def severity(penalty: Penalty, value: float | int | None) -> float:
    """0 at or beyond `best`, 1 at or beyond `worst`, linear between; 0 for an unknown value."""
    if value is None or penalty.worst == penalty.best:
        return 0.0
    return min(1.0, max(0.0, (float(value) - penalty.best) / (penalty.worst - penalty.best)))


def quality_level(score: float, thresholds: Thresholds | None = None) -> str:
    """LOW, MEDIUM, HIGH or ULTRA for a 0-100 score."""
    cuts = (thresholds or default_thresholds()).score.levels
    for level in ("ULTRA", "HIGH", "MEDIUM"):
        if score >= cuts[level]:
            return level
    return "LOW"


def score_quality(
    metrics: QualityMetrics, thresholds: Thresholds | None = None, model_score: float | None = None
) -> QualityScore:
    """Score and level of one image; `model_score` (0-100) is blended in when given."""
    thresholds = thresholds or default_thresholds()
    values = metrics.as_dict()
    severities = {name: severity(p, values[p.metric]) for name, p in thresholds.score.penalties.items()}
    classical = 100.0
    for name, p in thresholds.score.penalties.items():
        classical *= 1.0 - p.weight * severities[name]
    score = classical
    if model_score is not None and not math.isfinite(model_score):
        model_score = None  # a broken model (NaN weights) must not take every quality verdict down: classical only
    if model_score is not None:
        if not 0.0 <= model_score <= 100.0:
            raise ValueError(f"model_score must be in [0, 100], got {model_score}")
        weight = thresholds.model.score_weight
        score = (1.0 - weight) * classical + weight * model_score
    score = round(score, 2)  # the level of the score answered (84.999 was HIGH while the answer said 85.0)
    return QualityScore(
        score=score,
        level=quality_level(score, thresholds),
        classical_score=round(classical, 2),
        model_score=model_score,
        severities={k: round(v, 4) for k, v in severities.items() if v > 0},
    )
