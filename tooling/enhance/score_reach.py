"""What can raise the quality score of a distorted copy at all? (why auto mode's "score rises on >= 90 %" is not met)

    python -m tooling.enhance.score_reach [--photos 40] [--good 150]

Auto mode acts on tags and keeps an enhancement only when the score does not fall (docs/IMAGE_OPERATIONS.md). This
asks the question without the tags: every operation of auto mode's kind is applied to **every** copy of the defect
table of `tooling.enhance.evaluate` (the same 40 training-part photos, kinds, levels and seed), and each result is
scored by the served quality path. Reported per kind, at score margins 0, 1 and 2 points:

- `matching`: the operation that undoes the distortion (darken -> exposure_up, brighten -> exposure_down, contrast
  reduced -> auto_levels, colour cast -> white_balance or grey_world, whichever scores higher) raises the score;
- `any`: some operation raises it, and which operation that is most often.

The same is asked of good **training-part** photos (MOS >= 0.72, not among the 40; never the held-out part): the
share where some operation raises the score by the margin. If that share is high, an auto mode that chased the
score (try operations, keep what scores higher) would change most good photos, which issue #17 forbids (<= 10 %).
"""

import argparse
import io
import json
from collections import Counter, defaultdict

import numpy as np
from PIL import Image

from pipelines.enhance.plan import OPERATIONS
from tooling.enhance.evaluate import KIND_TAG, LEVELS, SEED, TRAIN_MIN_MOS, _jpeg, _spread
from tooling.quality.biq import GOOD_MOS, load_biq, split
from tooling.quality.distortions import apply_distortion
from tooling.quality.served import served_quality

CANDIDATES = ("white_balance", "grey_world", "exposure_up", "exposure_down", "auto_levels", "clahe", "shadows",
              "gamma", "saturate")  # fmt: skip
MATCHING = {
    "darken": ("exposure_up",),
    "brighten": ("exposure_down",),
    "contrast_change": ("auto_levels",),
    "color_cast": ("white_balance", "grey_world"),
}
MARGINS = (0.0, 1.0, 2.0)


def _copies(photos: int, good: int) -> list[tuple[str, str, np.ndarray]]:
    """(key, kind, pixels as the quality stage will see them): the defect table's copies, then good photos."""
    train, _ = split(load_biq())
    chosen = _spread([path for path, mos in train if mos >= TRAIN_MIN_MOS], photos)
    rng = np.random.default_rng(SEED)
    copies = []
    for path in chosen:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for kind in KIND_TAG:
            for level in LEVELS:
                encoded = _jpeg(apply_distortion(rgb, kind, level, rng))
                copies.append((f"{path.name}|{kind}|{level}", kind, np.asarray(Image.open(io.BytesIO(encoded)))))
    taken = set(chosen)
    others = [path for path, mos in train if mos >= GOOD_MOS and path not in taken]
    for path in _spread(others, good):
        copies.append((f"{path.name}|good|0", "good", np.asarray(Image.open(path).convert("RGB"))))
    return copies


def reach(photos: int, good: int, workers: int) -> dict:
    copies = _copies(photos, good)
    inputs = []
    for key, _, rgb in copies:
        inputs.append((f"{key}|none", _jpeg(rgb)))
        for name in CANDIDATES:
            result = OPERATIONS[name].apply(rgb)
            if result is not None:  # None: the operation has nothing to do on this image
                inputs.append((f"{key}|{name}", _jpeg(result[0])))
    scores = {r.key: r.served.score for r in served_quality(inputs, workers=workers)}
    counts: dict[str, Counter] = defaultdict(Counter)
    for key, kind, _ in copies:
        before = scores[f"{key}|none"]
        after = {name: scores[f"{key}|{name}"] for name in CANDIDATES if f"{key}|{name}" in scores}
        row = counts[kind]
        row["copies"] += 1
        best = max(after, key=after.__getitem__)
        row[f"best_is_{best}"] += 1
        matching = max((after[n] for n in MATCHING.get(kind, ()) if n in after), default=None)
        for margin in MARGINS:
            row[f"any_{margin:g}"] += after[best] > before + margin
            row[f"matching_{margin:g}"] += matching is not None and matching > before + margin
    report = {}
    for kind, row in counts.items():
        n = row["copies"]
        shares = {k: round(v / n, 3) for k, v in row.items() if k.startswith(("any_", "matching_"))}
        if kind == "good":
            shares = {k: v for k, v in shares.items() if k.startswith("any_")}
        bests = {k.removeprefix("best_is_"): v for k, v in row.most_common() if k.startswith("best_is_")}
        report[kind] = {"copies": n, **shares, "best_operation_counts": bests}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=40, help="training photos to distort (default 40, as evaluate)")
    parser.add_argument("--good", type=int, default=150, help="good training photos (default 150)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(reach(args.photos, args.good, args.workers), indent=2))


if __name__ == "__main__":
    main()
