"""Distorted copies of BIQ2021 photos at several resolutions: the samples issue #15's synthetic table is scored on.

    for sample in synthetic_samples(held, resolutions=RESOLUTIONS_MP, per_photo=4, seed=HELD_OUT_SEED):
        data = sample.encode()         # JPEG bytes of the photo resized to sample.megapixels, then distorted
        label = sample.label("blurry") # "positive" | "negative" | "excluded"

Each photo of the given rows gets, at each resolution, its clean copy and `per_photo` distorted copies; kind and level
are drawn per (photo name, resolution, copy) from a generator seeded by `seed` and sha256 of the name, so the set is
the same on every machine and does not depend on which other photos are present. The photo (512x512 in BIQ2021) is
first resized to the target pixel count (area interpolation down, bicubic up; aspect kept), then distorted: the
generator's spatial strengths are in pixels of the 512-px working image and scale with the photo's size, so a level
means the same visible strength at every resolution. Copies are stored as JPEG quality 95 (4:4:4), what a camera
or an export writes; the `jpeg` kind's blocks survive it.

Labels per tag (as `tooling.quality.evaluate`, issue #15's seven tags):

- positive: the kind's expected tag at this level (`distortions.expected_tags`);
- excluded: weaker levels of a kind that produces the tag, and the kind's allowed side effects;
- clean copies are negatives only for photos people rated good (MOS >= 0.72; a badly rated photo may really be
  blurry or dark) and excluded otherwise; the false-alarm table covers the clean photos in full.

The evaluator also excludes, per tool, the distorted copies of a photo whose clean copy that tool already tags (a dark
photo made noisy is still dark: counted once).
"""

import hashlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from tooling.quality.biq import GOOD_MOS
from tooling.quality.distortions import ALLOWED_TAGS, EXPECTED_TAGS, apply_distortion, expected_tags

# The tags of the macro F1, and the kinds that produce them (pixelate/quantization/saturation kinds are not
# scored here: their expected tags are outside the seven).
SCORED_TAGS = (
    "blurry",
    "noisy",
    "low_light",
    "overexposed",
    "low_contrast",
    "compression_artifacts",
    "color_cast",
)
SCORED_KINDS = tuple(kind for kind, tags in EXPECTED_TAGS.items() if set(tags) & set(SCORED_TAGS))
RESOLUTIONS_MP = (0.25, 1.0, 3.0)
HELD_OUT_SEED = 15  # the held-out table's draws
JPEG_QUALITY = 95

Label = Literal["positive", "negative", "excluded"]


@dataclass(frozen=True)
class Sample:
    path: Path
    mos: float
    megapixels: float
    kind: str | None  # None: the clean copy
    level: int  # 0 for the clean copy
    seed: int  # the distortion's own generator seed

    @property
    def key(self) -> str:
        what = f"{self.kind}-{self.level}" if self.kind else "clean"
        return f"{self.path.name}|{self.megapixels:g}MP|{what}|{self.seed}"

    def rgb(self) -> np.ndarray:
        """The photo at `megapixels`, distorted (HxWx3 uint8)."""
        with Image.open(self.path) as image:
            image = image.convert("RGB")
            w, h = image.size
            factor = (self.megapixels * 1e6 / (w * h)) ** 0.5
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            if size != (w, h):
                method = Image.Resampling.BOX if factor < 1 else Image.Resampling.BICUBIC
                image = image.resize(size, method)
            rgb = np.asarray(image)
        if self.kind is None:
            return rgb
        return apply_distortion(rgb, self.kind, self.level, np.random.default_rng(self.seed))

    def encode(self) -> bytes:
        """The copy as a JPEG file (quality 95, no chroma subsampling)."""
        out = io.BytesIO()
        Image.fromarray(self.rgb()).save(out, "JPEG", quality=JPEG_QUALITY, subsampling=0)
        return out.getvalue()

    def label(self, tag: str) -> Label:
        if self.kind is None:
            return "negative" if self.mos >= GOOD_MOS else "excluded"
        if tag in expected_tags(self.kind, self.level):
            return "positive"
        if tag in EXPECTED_TAGS[self.kind] or tag in ALLOWED_TAGS[self.kind]:
            return "excluded"
        return "negative"


def clean_index(samples: Sequence[Sample]) -> np.ndarray:
    """For every sample, the index of the clean copy of the same photo at the same resolution."""
    clean = {(s.path.name, s.megapixels): i for i, s in enumerate(samples) if s.kind is None}
    return np.array([clean[(s.path.name, s.megapixels)] for s in samples])


def tag_counts(
    labels: np.ndarray, flags: np.ndarray, clean_of: np.ndarray, distorted: np.ndarray, among: np.ndarray | None = None
) -> dict:
    """TP/FP/FN, precision, recall, F1 of `flags` against `labels` ("positive"/"negative"/"excluded"), leaving out
    excluded samples and distorted copies whose clean copy (`clean_of`, read only where `distorted`) is flagged too;
    `among`: count only these samples (e.g. one resolution)."""
    left_out = distorted & flags[np.where(distorted, clean_of, 0)]
    counted = (labels != "excluded") & ~left_out & (True if among is None else among)
    truth = labels == "positive"
    tp = int(np.sum(counted & truth & flags))
    fp = int(np.sum(counted & ~truth & flags))
    fn = int(np.sum(counted & truth & ~flags))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {"positives": tp + fn, "tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def _name_seed(name: str, seed: int) -> int:
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:12], 16)


def synthetic_samples(
    rows: Sequence[tuple[Path, float]],
    resolutions: Sequence[float] = RESOLUTIONS_MP,
    per_photo: int = 4,
    seed: int = HELD_OUT_SEED,
    kinds: Sequence[str] = SCORED_KINDS,
) -> Iterator[Sample]:
    """Clean + `per_photo` distorted copies of every photo at every resolution, in row order."""
    for path, mos in rows:
        for megapixels in resolutions:
            rng = np.random.default_rng(_name_seed(f"{path.name}|{megapixels:g}", seed))
            yield Sample(path, mos, megapixels, None, 0, 0)
            for _ in range(per_photo):
                kind = str(kinds[int(rng.integers(len(kinds)))])
                yield Sample(path, mos, megapixels, kind, int(rng.integers(1, 6)), int(rng.integers(2**31)))
