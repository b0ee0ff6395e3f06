"""Standardised ridge regression and k-fold cross-validation of its strength, in numpy (no scipy/sklearn here).

Two ways to fit a score head (`Fit`: features, targets, alpha -> RidgeHead):
- `fit_ridge`: from scratch, the weights penalised towards zero (training on thousands of photos);
- `correction(base)`: the weights penalised towards `base`'s (a served head adapted to a few rated photos: with
  tens of photos against thousands of features, a head from scratch is mostly noise, a correction stays close to
  what the base head learned from many more).

`nested_cross_validate` gives the honest out-of-fold figure of a fit whose strength is itself chosen by
cross-validation: the strength is chosen inside each outer fold, never on the photos it is then scored on.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tooling.quality.real_photos import spearman

ALPHAS = (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0, 30000.0)
# A correction's strengths: up to ~100x the Gram matrix's diagonal (~7,000 standardised features), where the base
# head is kept and only its bias moves.
CORRECTION_ALPHAS = (300.0, 1000.0, 3000.0, 10000.0, 30000.0, 100000.0, 300000.0, 1000000.0)


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


Fit = Callable[[np.ndarray, np.ndarray, float], RidgeHead]


def correction(base: RidgeHead) -> Fit:
    """Ridge towards `base`'s weights, in its standardisation: weights = base.weights + delta, the penalty
    alpha * |delta|^2, the bias free. A large alpha keeps `base` (moving only its bias); alpha -> 0 fits the
    photos as closely as a head from scratch would."""

    def fit(features: np.ndarray, targets: np.ndarray, alpha: float) -> RidgeHead:
        z = (features.astype(np.float64) - base.mean) / base.scale
        residual = targets - (z @ base.weights + base.bias)
        centre = z.mean(axis=0)
        zc = z - centre
        centred = residual - residual.mean()
        delta = zc.T @ np.linalg.solve(zc @ zc.T + alpha * np.eye(zc.shape[0]), centred)
        bias = base.bias + float(residual.mean()) - float(centre @ delta)
        return RidgeHead(base.mean, base.scale, base.weights + delta, bias, alpha)

    return fit


def best_alpha(scores: dict[float, float]) -> float:
    """The strength with the best cross-validated Spearman; ties (and NaN-free equals) go to the stronger one."""
    finite = {a: s for a, s in scores.items() if np.isfinite(s)}
    return max(finite, key=lambda a: (finite[a], a)) if finite else max(scores)


def cross_validate(
    features: np.ndarray,
    targets: np.ndarray,
    alphas: Sequence[float] = ALPHAS,
    folds: int = 5,
    seed: int = 0,
    fit: Fit = fit_ridge,
) -> dict[float, float]:
    """Out-of-fold Spearman per ridge strength (training data only). The best of these is chosen on the same folds,
    so it is optimistic as a figure of the chosen fit: `nested_cross_validate` gives the honest one."""
    fold = np.random.default_rng(seed).integers(0, folds, len(targets))
    scores = {}
    for alpha in alphas:
        predictions = np.zeros(len(targets))
        for k in range(folds):
            head = fit(features[fold != k], targets[fold != k], alpha)
            predictions[fold == k] = head.predict(features[fold == k])
        scores[alpha] = spearman(predictions, targets)
    return scores


@dataclass(frozen=True)
class NestedFigure:
    predictions: np.ndarray  # N: each photo's prediction by a fit (and a strength choice) that never saw it
    alphas: tuple[float, ...]  # the strength each outer fold chose
    spearman: float


def nested_cross_validate(
    features: np.ndarray,
    targets: np.ndarray,
    alphas: Sequence[float] = ALPHAS,
    folds: int = 5,
    seed: int = 0,
    fit: Fit = fit_ridge,
) -> NestedFigure:
    """Out-of-fold predictions of "choose the strength by `folds`-fold cross-validation, then fit": per outer fold
    (balanced, shuffled), the strength is chosen by cross-validation on the other folds alone, fitted there and
    scored on the fold. Their Spearman is what the whole procedure is worth on photos it has not seen."""
    outer = np.random.default_rng(seed).permutation(len(targets)) % folds
    predictions = np.zeros(len(targets))
    chosen = []
    for k in range(folds):
        train = outer != k
        alpha = best_alpha(cross_validate(features[train], targets[train], alphas, folds, seed + 1 + k, fit))
        predictions[~train] = fit(features[train], targets[train], alpha).predict(features[~train])
        chosen.append(alpha)
    return NestedFigure(predictions, tuple(chosen), spearman(predictions, targets))
