"""Model outputs -> ranked predictions."""

from dataclasses import dataclass

import numpy as np

from serving.config.model_config import OutputSpec
from serving.float32 import float32_score


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


def scores_from_output(values: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Probabilities from an output row: logits get a (stable) softmax, probabilities pass through."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if spec.kind != "logits":
        return values
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


def top_k(scores: np.ndarray, labels: tuple[str, ...], k: int) -> list[Prediction]:
    """The k highest scores, best first; ties keep the lower index first. Scores at float32 precision."""
    k = max(1, min(k, scores.shape[-1]))
    order = np.argsort(-scores, kind="stable")[:k]
    return [
        Prediction(label=labels[i] if i < len(labels) else str(i), index=int(i), score=float32_score(scores[i]))
        for i in order
    ]
