"""The two learned heads on pooled features: ridge regression to MOS and masked multi-label logistic regression
(on the top principal components, mapped back to one weight vector per tag: still linear in the features).

Both standardise with the training features' mean and scale (stored in the head, folded into the served graph).
Strengths are chosen by k-fold cross-validation **grouped by photo** (every copy of a photo in the same fold) on the
training part only; `out_of_fold` returns, for every training item, what a head fitted without its photo predicts,
which is what thresholds may honestly be tuned on.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tooling.quality_mos.ridge import fit_ridge

L2 = (1e-3, 1e-2, 1e-1, 1.0)  # logistic weight decay candidates (on the principal components)
EPOCHS = 200
COMPONENTS = 512  # the logistic heads see the standardised features' top principal components (fit in seconds)


@dataclass(frozen=True)
class Projection:
    """Standardisation and the top principal components of the training features (unsupervised, labels unseen)."""

    mean: np.ndarray  # D
    scale: np.ndarray  # D
    basis: np.ndarray  # D x C, orthonormal columns

    @classmethod
    def fit(cls, features: np.ndarray, components: int = COMPONENTS) -> "Projection":
        torch.manual_seed(0)
        mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-6
        z = torch.from_numpy(((features - mean) / scale).astype(np.float32))
        _, _, basis = torch.svd_lowrank(z, q=min(components, *z.shape), niter=3)
        return cls(mean, scale, basis.numpy().astype(np.float64))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale) @ self.basis


@dataclass(frozen=True)
class LogisticHeads:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # D x K, on the standardised features
    bias: np.ndarray  # K

    def predict(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.weights + self.bias)))


def fit_logistic(
    projection: Projection, components: np.ndarray, targets: np.ndarray, mask: np.ndarray, l2: float
) -> LogisticHeads:
    """components: projection(features), N x C; targets N x K in {0, 1}, mask N x K (1 = labelled); positives are
    re-weighted to balance each tag (at most 20x)."""
    torch.manual_seed(0)
    z = torch.from_numpy(components.astype(np.float32))
    y, m = torch.from_numpy(targets.astype(np.float32)), torch.from_numpy(mask.astype(np.float32))
    positives = (y * m).sum(0).clamp(min=1)
    negatives = ((1 - y) * m).sum(0).clamp(min=1)
    pos_weight = (negatives / positives).clamp(max=20)
    linear = torch.nn.Linear(z.shape[1], y.shape[1])
    optimiser = torch.optim.LBFGS(
        linear.parameters(), lr=1, max_iter=EPOCHS, history_size=20, line_search_fn="strong_wolfe"
    )
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=pos_weight)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (loss_fn(linear(z), y) * m).sum(0) / m.sum(0).clamp(min=1)
        total = loss.sum() + l2 * (linear.weight**2).sum()
        total.backward()
        return total

    optimiser.step(closure)
    weights = projection.basis @ linear.weight.detach().numpy().T.astype(np.float64)
    return LogisticHeads(projection.mean, projection.scale, weights, linear.bias.detach().numpy().astype(np.float64))


def _folds(groups: Sequence[str], k: int, seed: int = 0) -> np.ndarray:
    names = sorted(set(groups))
    fold_of = dict(zip(names, np.random.default_rng(seed).integers(0, k, len(names)), strict=True))
    return np.array([fold_of[g] for g in groups])


def logistic_out_of_fold(
    projection: Projection,
    components: np.ndarray,
    features: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    groups: Sequence[str],
    l2: float,
    k: int = 5,
) -> np.ndarray:
    fold = _folds(groups, k)
    out = np.zeros(targets.shape)
    for f in range(k):
        heads = fit_logistic(projection, components[fold != f], targets[fold != f], mask[fold != f], l2)
        out[fold == f] = heads.predict(features[fold == f])
    return out


def mean_log_loss(probs: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> float:
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    loss = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    return float(((loss * mask).sum(0) / np.maximum(mask.sum(0), 1)).mean())


def ridge_out_of_fold(
    features: np.ndarray, mos: np.ndarray, groups: Sequence[str], alpha: float, k: int = 5
) -> np.ndarray:
    fold = _folds(groups, k)
    out = np.zeros(len(mos))
    for f in range(k):
        out[fold == f] = fit_ridge(features[fold != f], mos[fold != f], alpha).predict(features[fold == f])
    return out
