"""The head a training job fits: multinomial logistic regression on standardised embeddings (numpy, full batch,
deterministic), with class-balanced weights and an L2 penalty chosen by cross-validation on the training part only,
and the validation report: accuracy, per-class precision and recall, the confusion matrix."""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from serving.trained_head import ClassifierHead

L2_GRID = (1e-3, 1e-2, 1e-1)  # penalty per weight, relative to the mean loss
STEPS = 400
StopCheck = Callable[[], bool]  # True once the fit should stop (the job was cancelled): checked between steps


class FitStoppedError(Exception):
    """The fit stopped before its end because its `should_stop` said so."""


def _never() -> bool:
    return False


def _fit(
    x: np.ndarray, y: np.ndarray, k: int, l2: float, steps: int = STEPS, should_stop: StopCheck = _never
) -> tuple[np.ndarray, np.ndarray]:
    """(weights D x K, bias K) minimising class-balanced cross-entropy + l2/2 * |W|^2 with Adam (convex: the
    result does not depend on the start, which is zero). Raises `FitStoppedError` once `should_stop()`."""
    n, d = x.shape
    counts = np.bincount(y, minlength=k).astype(np.float64)
    sample_weight = (n / (k * np.maximum(counts, 1)))[y] / n
    onehot = np.eye(k)[y]
    w, b = np.zeros((d, k)), np.zeros(k)
    m_w, v_w, m_b, v_b = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    rate, beta1, beta2 = 0.05, 0.9, 0.999
    for step in range(1, steps + 1):
        if should_stop():
            raise FitStoppedError("the fit was stopped")
        z = x @ w + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        residual = (p - onehot) * sample_weight[:, None]
        grad_w, grad_b = x.T @ residual + l2 * w, residual.sum(axis=0)
        for param, grad, m, v in ((w, grad_w, m_w, v_w), (b, grad_b, m_b, v_b)):
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            param -= rate * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + 1e-8)
    return w, b


def _folds(y: np.ndarray, count: int) -> list[np.ndarray]:
    """Fold index per sample, stratified: each class's samples dealt round-robin (in their given order)."""
    fold = np.zeros(len(y), np.int64)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        fold[members] = np.arange(len(members)) % count
    return [np.flatnonzero(fold == i) for i in range(count)]


def choose_l2(x: np.ndarray, y: np.ndarray, k: int, should_stop: StopCheck = _never) -> float:
    """The penalty with the best balanced accuracy in 3-fold cross-validation on the training part."""
    folds = _folds(y, 3)
    best, best_score = L2_GRID[-1], -1.0
    for l2 in L2_GRID:
        scores = []
        for held in folds:
            if len(held) == 0:
                continue
            keep = np.setdiff1d(np.arange(len(y)), held)
            w, b = _fit(x[keep], y[keep], k, l2, should_stop=should_stop)
            predicted = np.argmax(x[held] @ w + b, axis=1)
            per_class = [np.mean(predicted[y[held] == c] == c) for c in np.unique(y[held])]
            scores.append(float(np.mean(per_class)))
        score = float(np.mean(scores)) if scores else 0.0
        if score > best_score + 1e-9:
            best, best_score = l2, score
    return best


def train_head(
    features: np.ndarray, y: np.ndarray, labels: list[str], should_stop: StopCheck = _never
) -> tuple[ClassifierHead, float]:
    """(the fitted head, the chosen L2 penalty) from raw embeddings N x D and class indices into `labels`; raises
    `FitStoppedError` within one step of `should_stop()` turning true."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    x = (features - mean) / scale
    l2 = choose_l2(x, y, len(labels), should_stop)
    w, b = _fit(x, y, len(labels), l2, should_stop=should_stop)
    return ClassifierHead(mean, scale, w.astype(np.float32), b.astype(np.float32), tuple(labels)), l2


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    precision: float
    recall: float
    support: int


@dataclass(frozen=True)
class ValidationReport:
    accuracy: float
    balanced_accuracy: float
    images: int
    per_class: list[ClassMetrics]
    confusion: list[list[int]]  # rows: true class, columns: predicted, in `labels` order
    labels: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def validation_report(probs: np.ndarray, y: np.ndarray, labels: list[str]) -> ValidationReport:
    predicted = np.argmax(probs, axis=1)
    k = len(labels)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    per_class = []
    for c, label in enumerate(labels):
        tp, predicted_c, support = confusion[c, c], confusion[:, c].sum(), confusion[c, :].sum()
        precision = float(tp / predicted_c) if predicted_c else 0.0
        recall = float(tp / support) if support else 0.0
        per_class.append(ClassMetrics(label, round(precision, 4), round(recall, 4), int(support)))
    recalls = [m.recall for m in per_class if m.support]
    return ValidationReport(
        accuracy=round(float(np.mean(predicted == y)), 4) if len(y) else 0.0,
        balanced_accuracy=round(float(np.mean(recalls)), 4) if recalls else 0.0,
        images=int(len(y)),
        per_class=per_class,
        confusion=confusion.tolist(),
        labels=list(labels),
    )
