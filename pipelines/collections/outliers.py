"""Images that stand out from their collection: in the classifier's output space, or by rare metadata.

Two kinds, merged into one entry per image (its reasons joined, its highest score kept):

* feature space (when at least 20 images have `class_probs`): each image's sparse class-probability vector, its
  distance to the collection's mean vector (1 - cosine similarity), and the robust z-score of that distance
  ((d - median) / (1.4826 * MAD)); an outlier at z >= 3.5. Score: z.
* rare metadata: a format, colour mode or resolution class (the report's own: `summary.RESOLUTION_CLASSES`, named
  as its `resolutions` section names them) held by at most 1 % of the images that state it (only among at least
  50 such images), or an aspect ratio beyond 4:1. Score: 3.5 at the rule's threshold, like z, plus 3.5 for each
  tenfold rarer share (rare values) or each doubling of the ratio (aspect).

A collection of fewer than 20 analysed images never has outliers: there is no "usual" to stand out from.
Failed records (ok False) are not counted and never flagged.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.collections.record import ImageRecord
from pipelines.collections.summary import resolution_class

MIN_COLLECTION = 20
MIN_FEATURE_RECORDS = 20
Z_THRESHOLD = 3.5
MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
MEAN_AD_SCALE = 1.253314  # mean absolute deviation -> standard deviation, when the MAD is 0
MIN_SPREAD = 0.01  # cosine distance: nearly identical outputs are not "far" whatever the z
RARE_SHARE = 0.01
MIN_RARE_COLLECTION = 50
MAX_ASPECT = 4.0


@dataclass(frozen=True)
class Outlier:
    name: str
    reason: str
    score: float  # higher is more unusual; 3.5 is where each rule starts to flag


def _feature_outliers(records: Sequence[ImageRecord]) -> list[Outlier]:
    with_probs = [r for r in records if any(c >= 0 and p > 0 for c, p in r.class_probs)]
    if len(with_probs) < MIN_FEATURE_RECORDS:
        return []
    entries = [(i, c, p) for i, r in enumerate(with_probs) for c, p in r.class_probs if c >= 0 and p > 0]
    rows = np.array([i for i, _, _ in entries], dtype=np.int64)
    classes = np.array([c for _, c, _ in entries], dtype=np.int64)
    probs = np.array([p for _, _, p in entries], dtype=np.float64)
    n, width = len(with_probs), int(classes.max()) + 1
    # A class listed twice for one image counts once with the summed probability.
    cells, inverse = np.unique(rows * width + classes, return_inverse=True)
    values = np.bincount(inverse.ravel(), weights=probs)
    rows, classes = cells // width, cells % width
    mean = np.bincount(classes, weights=values, minlength=width) / n
    dots = np.bincount(rows, weights=values * mean[classes], minlength=n)
    norms = np.sqrt(np.bincount(rows, weights=values**2, minlength=n))
    denominator = norms * np.linalg.norm(mean)
    cosine = np.divide(dots, denominator, out=np.zeros(n), where=denominator > 0)
    distance = 1.0 - np.clip(cosine, -1.0, 1.0)
    median = float(np.median(distance))
    deviation = np.abs(distance - median)
    spread = MAD_SCALE * float(np.median(deviation))
    if spread == 0.0:
        spread = MEAN_AD_SCALE * float(np.mean(deviation))
    z = (distance - median) / max(spread, MIN_SPREAD)
    return [
        Outlier(r.name, f"far from the collection in the classifier's output space (z = {z[i]:.1f})", float(z[i]))
        for i, r in enumerate(with_probs)
        if z[i] >= Z_THRESHOLD
    ]


_RARE_ATTRIBUTES: tuple[tuple[str, Callable[[ImageRecord], str | None]], ...] = (
    ("format", lambda r: r.format),
    ("colour mode", lambda r: r.mode),
    ("resolution", resolution_class),  # the classes the report's `resolutions` counts, not buckets of its own
)


def _rare_value_outliers(records: Sequence[ImageRecord]) -> list[Outlier]:
    found: list[Outlier] = []
    for label, value_of in _RARE_ATTRIBUTES:
        values = [value_of(r) for r in records]
        counts = Counter(v for v in values if v is not None)
        total = sum(counts.values())
        if total < MIN_RARE_COLLECTION or len(counts) < 2:
            continue
        for record, value in zip(records, values, strict=True):
            if value is None or counts[value] > RARE_SHARE * total:
                continue
            share = counts[value] / total
            score = Z_THRESHOLD * (1.0 + math.log10(RARE_SHARE / share))
            found.append(Outlier(record.name, f"{label} {value}: {counts[value]:,} of {total:,} images", score))
    return found


def _aspect_outliers(records: Sequence[ImageRecord]) -> list[Outlier]:
    found: list[Outlier] = []
    for r in records:
        if not r.width or not r.height:
            continue
        ratio = max(r.width, r.height) / min(r.width, r.height)
        if ratio > MAX_ASPECT:
            score = Z_THRESHOLD * (1.0 + math.log2(ratio / MAX_ASPECT))
            found.append(Outlier(r.name, f"extreme aspect ratio {ratio:.1f}:1 ({r.width}x{r.height})", score))
    return found


def find_outliers(records: Sequence[ImageRecord], limit: int = 20) -> list[Outlier]:
    """At most `limit` outliers, highest score first (then by name); one entry per image, its reasons joined by
    "; ". Nothing for a collection of fewer than 20 analysed images."""
    analysed = [r for r in records if r.ok]
    if len(analysed) < MIN_COLLECTION or limit <= 0:
        return []
    by_name: dict[str, list[Outlier]] = defaultdict(list)
    for outlier in _feature_outliers(analysed) + _rare_value_outliers(analysed) + _aspect_outliers(analysed):
        by_name[outlier.name].append(outlier)
    merged = []
    for name, found in by_name.items():
        found.sort(key=lambda o: -o.score)
        merged.append(Outlier(name, "; ".join(o.reason for o in found), found[0].score))
    merged.sort(key=lambda o: (-o.score, o.name))
    return merged[:limit]
