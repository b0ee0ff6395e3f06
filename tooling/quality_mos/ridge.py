"""Standardised ridge regression and k-fold cross-validation of its strength, in numpy (no scipy/sklearn here)."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tooling.quality.real_photos import spearman

ALPHAS = (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)


@dataclass(frozen=True)
class RidgeHead:
    """prediction = ((x - mean) / scale) @ weights + bias."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    alpha: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.weights + self.bias

    def on_standardisation(self, mean: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, float]:
        """(weights, bias) giving the same predictions on features standardised with `mean` and `scale` instead."""
        weights = self.weights * scale / self.scale
        return weights, self.bias + float(self.weights @ ((mean - self.mean) / self.scale))


def fit_ridge(features: np.ndarray, targets: np.ndarray, alpha: float) -> RidgeHead:
    x = features.astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    bias = float(targets.mean())
    centred = targets - bias
    if z.shape[0] < z.shape[1]:  # fewer photos than features: the same solution from the n x n (dual) system
        weights = z.T @ np.linalg.solve(z @ z.T + alpha * np.eye(z.shape[0]), centred)
    else:
        weights = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ centred)
    return RidgeHead(mean, scale, weights, bias, alpha)


def cross_validate(
    features: np.ndarray, targets: np.ndarray, alphas: Sequence[float] = ALPHAS, folds: int = 5, seed: int = 0
) -> dict[float, float]:
    """Out-of-fold Spearman per ridge strength (training data only)."""
    fold = np.random.default_rng(seed).integers(0, folds, len(targets))
    scores = {}
    for alpha in alphas:
        predictions = np.zeros(len(targets))
        for k in range(folds):
            head = fit_ridge(features[fold != k], targets[fold != k], alpha)
            predictions[fold == k] = head.predict(features[fold == k])
        scores[alpha] = spearman(predictions, targets)
    return scores
