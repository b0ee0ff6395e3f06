"""Model outputs -> ranked predictions: top-k order, k clamping, and softmax for logits only."""

import numpy as np
import pytest

from serving.config.model_config import OutputSpec
from serving.float32 import float32_score
from serving.postprocess import Prediction, scores_from_output, top_k

pytestmark = pytest.mark.unit

LABELS = ("background", "tench", "goldfish", "shark", "ray")
LOGITS = OutputSpec(name="logits", shape=[5], kind="logits")
PROBS = OutputSpec(name="probs", shape=[5], kind="probabilities")


def test_top_k_is_best_first_with_labels() -> None:
    scores = np.array([0.05, 0.5, 0.1, 0.3, 0.05])
    assert top_k(scores, LABELS, 3) == [
        Prediction("tench", 1, 0.5),
        Prediction("shark", 3, 0.3),
        Prediction("goldfish", 2, 0.1),
    ]


def test_ties_keep_the_lower_index_first() -> None:
    scores = np.array([0.2, 0.2, 0.4, 0.2, 0.0])
    assert [p.index for p in top_k(scores, LABELS, 5)] == [2, 0, 1, 3, 4]


@pytest.mark.parametrize(("k", "expected"), [(0, 1), (-3, 1), (1, 1), (5, 5), (6, 5), (1000, 5)])
def test_k_is_clamped_to_the_number_of_classes(k: int, expected: int) -> None:
    assert len(top_k(np.linspace(0, 1, 5), LABELS, k)) == expected


def test_missing_labels_fall_back_to_the_index() -> None:
    predictions = top_k(np.array([0.1, 0.2, 0.7]), ("only-one",), 3)
    assert [p.label for p in predictions] == ["2", "1", "only-one"]
    assert all(isinstance(p.index, int) and isinstance(p.score, float) for p in predictions)


def test_softmax_for_logits() -> None:
    logits = np.array([1.0, 2.0, 3.0, 0.0, -1.0], dtype=np.float32)
    scores = scores_from_output(logits, LOGITS)
    expected = np.exp(logits.astype(np.float64)) / np.exp(logits.astype(np.float64)).sum()
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert scores.sum() == pytest.approx(1.0)
    assert [p.index for p in top_k(scores, LABELS, 5)] == [2, 1, 0, 3, 4]  # softmax keeps the order


def test_softmax_is_stable_for_large_logits() -> None:
    scores = scores_from_output(np.array([1000.0, 1001.0, -1000.0, 0.0, 999.0]), LOGITS)
    assert np.all(np.isfinite(scores))
    assert scores[1] == pytest.approx(np.e / (1 + np.e + np.exp(-1)))
    assert scores.sum() == pytest.approx(1.0)


def test_probabilities_pass_through_unchanged() -> None:
    row = np.array([[0.1, 0.2, 0.3, 0.25, 0.15]], dtype=np.float32)  # a batch row with a leading axis
    scores = scores_from_output(row, PROBS)
    assert scores.shape == (5,) and scores.dtype == np.float64
    np.testing.assert_array_equal(scores, row.reshape(-1).astype(np.float64))
    raw = OutputSpec(name="raw", shape=[5])
    np.testing.assert_array_equal(scores_from_output(row, raw), scores)


def test_scores_are_answered_at_the_models_float32_precision() -> None:
    """A float32 probability comes back as its shortest decimal (0.917, not 0.9170000553131104), which reads back as
    the same float32; a softmax of float32 logits (computed in float64) is rounded to the same precision."""
    row = np.array([0.917, 0.075, 0.008], dtype=np.float32)
    predictions = top_k(scores_from_output(row, PROBS), ("a", "b", "c"), 3)
    assert [p.score for p in predictions] == [0.917, 0.075, 0.008]
    assert [repr(p.score) for p in predictions] == ["0.917", "0.075", "0.008"]
    assert all(np.float32(p.score) == row[p.index] for p in predictions)
    softmax = scores_from_output(np.array([1.0, 2.0, 3.0, 0.0, -1.0], dtype=np.float32), LOGITS)
    for prediction in top_k(softmax, LABELS, 5):
        assert prediction.score == pytest.approx(softmax[prediction.index], rel=1e-7)
        assert len(repr(prediction.score)) <= 12  # at most 9 significant digits (float32's round trip), not 17
    assert float32_score(1e-40) > 0 and float32_score(0.0) == 0.0  # a subnormal float32 stays a number
    rng = np.random.default_rng(7)
    for value in rng.random(2000, dtype=np.float32):  # shortest, and reads back as the same float32
        shortest = float32_score(float(value))
        assert np.float32(shortest) == value and repr(shortest) == str(value), (value, shortest)
    assert float32_score(1e39) == 1e39 and float32_score(float("inf")) == float("inf")
