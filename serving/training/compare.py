"""A new version against the served one, on the same held-out images that neither trained on.

The split goes by name and is fixed, but which images a category holds out depends on how many it has: a dataset
that grew (the usual retrain), or another `validation_fraction`, moves some of the served version's training images
into this job's validation part. The served version scored on them was partly scored on its own training images, so
its accuracy was inflated and `promote: if_better` kept it. Each version records the contents (sha256) it trained
on, and both versions are compared on the validation images the served one did not train on.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.trained_head import ClassifierHead
from serving.training.registry import HEAD_FILE, TRAINED_ON_FILE
from serving.training.softmax import validation_report


def read_trained_on(folder: Path) -> set[str]:
    """The contents a version trained on; empty for a version registered before they were recorded."""
    try:
        return set((folder / TRAINED_ON_FILE).read_text(encoding="ascii").split())
    except (OSError, ValueError):
        return set()


@dataclass(frozen=True)
class Comparison:
    current: float | None  # the served version's accuracy on the compared images (None: none, or other labels)
    new: float | None  # the new version's accuracy on the same images
    images: int  # validation images compared: those the served version did not train on


NOT_COMPARED = Comparison(None, None, 0)


def compare_with_served(
    folder: Path | None,
    head: ClassifierHead,
    xv: np.ndarray,
    yv: np.ndarray,
    labels: list[str],
    validation_digests: list[str],
) -> Comparison:
    """`head` (the new version) and the version in `folder` (the served one; None: no served version) on the
    validation images (features `xv`, classes `yv` into `labels`, contents `validation_digests`) that the served one
    did not train on."""
    if folder is None:
        return NOT_COMPARED
    try:
        served = ClassifierHead.load(folder / HEAD_FILE)
    except (OSError, ValueError, KeyError):
        return NOT_COMPARED
    if sorted(served.labels) != labels:
        return NOT_COMPARED
    trained_on = read_trained_on(folder)
    unseen = np.array([digest not in trained_on for digest in validation_digests], bool)
    if not unseen.any():
        return NOT_COMPARED
    order = [served.labels.index(label) for label in labels]
    x, y = xv[unseen], yv[unseen]
    current = validation_report(served.predict(x)[:, order], y, labels).accuracy
    return Comparison(current, validation_report(head.predict(x), y, labels).accuracy, int(unseen.sum()))


def decide_promotion(rule: str, current: str | None, current_accuracy: float | None, accuracy: float | None) -> bool:
    """Whether a new version is served under the job's `promote` rule, given the served version (`current`) and both
    versions' accuracy on the images compared."""
    if rule == "never":
        return False
    if rule == "always" or current is None:
        return True
    # other labels (or no validation image the served version did not train on): not comparable, not promoted
    return current_accuracy is not None and accuracy is not None and accuracy > current_accuracy
