"""The MOS-score tooling: the ridge head and its cross-validation on synthetic data, the feature extractor on the
real classifier (skipped when ../shared/models is absent)."""

import numpy as np
import pytest

from tooling.quality_mos.features import LAYERS, classifier, feature_session, pooled
from tooling.quality_mos.ridge import cross_validate, fit_ridge

pytestmark = pytest.mark.unit


def test_ridge_recovers_a_linear_signal_and_cv_prefers_some_shrinkage() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 60)) * rng.uniform(0.1, 10, size=60)  # scales differ: standardised inside
    truth = rng.normal(size=60)
    targets = ((features / features.std(axis=0)) @ truth) * 0.01 + 0.5 + rng.normal(scale=0.05, size=400)
    head = fit_ridge(features[:300], targets[:300], alpha=1.0)
    assert np.corrcoef(head.predict(features[300:]), targets[300:])[0, 1] > 0.7
    scores = cross_validate(features[:300], targets[:300], alphas=(1.0, 1e6))
    assert scores[1.0] > scores[1e6]  # a signal this clear is not best explained by a constant


def test_pooled_is_mean_and_std_per_channel() -> None:
    maps = [np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4), np.ones((1, 3, 2, 2), np.float32)]
    vector = pooled(maps)
    assert vector.shape == (2 + 2 + 3 + 3,)
    assert vector[:2].tolist() == [5.5, 17.5] and vector[-3:].tolist() == [0.0, 0.0, 0.0]


def test_feature_session_takes_any_size() -> None:
    entry = classifier()
    if entry.artifacts.onnx is None:
        pytest.skip(f"{entry.name} is not available ({entry.unavailable_reason}): weights come from ../shared/models")
    session = feature_session(entry.artifacts.onnx)
    for side in (96, 160):
        outputs = session.run(None, {"input": np.zeros((1, 3, side, side), np.float32)})
        assert len(outputs) == len(LAYERS) and pooled(outputs).shape == (7136,)
