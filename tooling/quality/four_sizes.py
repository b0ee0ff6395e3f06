"""Issue #15's four-size check on BIQ2021 **training** photos: the place to try a change before the held-out report.

    python -m tooling.quality.four_sizes [--photos 1606] [--thresholds FILE] [--sharp-sweep]   # ~8 min for all, 2 cores

Every chosen training photo at 0.25, 1, 3 and 12 MP (resized, re-encoded as JPEG 95, as `heldout_report` makes the
held-out copies) through the served path (`served_quality`): the share of photos whose tags are identical at all four
sizes, defect tags alone, the score spread, and per tag the photos whose tag differs between sizes. The held-out fifth
is never read; on 2026-12-03 the held-out part flipped more often than the training part (8.4 % of photos against
5.2 %), so expect a figure here a few points above what the held-out report will give.

`--sharp-sweep` also prints, for each `sharp` threshold on `coarse_sharpness` from 0.76 to 0.855, the share of photos
whose tags are identical at the four sizes with `sharp` re-decided at that threshold (its other conditions kept: not
`blurry`, not `low_information`), the share whose `sharp` alone differs, and the share of 1 MP copies that are `sharp`.
"""

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.quality.thresholds import load_thresholds
from tooling.quality.biq import BIQ_FOLDER, load_biq, split
from tooling.quality.biq_synthetic import Sample
from tooling.quality.heldout_report import resolution_check, resolution_copies
from tooling.quality.served import ServedResult, served_quality

SWEEP = tuple(float(round(t, 4)) for t in np.arange(0.76, 0.8551, 0.005))
SHARP_VETOES = {"blurry", "low_information"}  # thresholds.yaml: sharp excludes these


def sharp_sweep(clean: Sequence[Sample], results: Sequence[ServedResult]) -> list[dict]:
    by_photo: dict[str, list[tuple[float, float, frozenset[str]]]] = defaultdict(list)
    for sample, result in zip(clean, results, strict=True):
        tags = frozenset(t.name for t in result.served.tags)
        by_photo[sample.path.name].append((sample.megapixels, result.metrics["coarse_sharpness"], tags))
    rows = []
    for threshold in SWEEP:
        same = flips = sharp_1mp = 0
        for copies in by_photo.values():
            sharp = [value > threshold and not tags & SHARP_VETOES for _, value, tags in copies]
            sets = {
                tags - {"sharp"} | ({"sharp"} if s else set()) for (_, _, tags), s in zip(copies, sharp, strict=True)
            }
            same, flips = same + (len(sets) == 1), flips + (len(set(sharp)) > 1)
            sharp_1mp += any(s for (mp, _, _), s in zip(copies, sharp, strict=True) if mp == 1.0)
        n = max(len(by_photo), 1)
        rows.append({"threshold": threshold, "identical_tags": same / n, "sharp_differs": flips / n,
                     "sharp_at_1mp": sharp_1mp / n})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.quality.four_sizes", description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=BIQ_FOLDER)
    parser.add_argument("--photos", type=int, help="only the first N training photos (default: all)")
    parser.add_argument("--thresholds", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sharp-sweep", action="store_true", help="identity at other `sharp` thresholds too")
    args = parser.parse_args(argv)
    train, _ = split(load_biq(args.folder))
    train = train[: args.photos] if args.photos else train
    clean = resolution_copies(train)
    results = served_quality(clean, args.thresholds, workers=args.workers)
    print(json.dumps(resolution_check(clean, results, load_thresholds(args.thresholds)), indent=1))
    if args.sharp_sweep:
        for row in sharp_sweep(clean, results):
            print(
                f"sharp at coarse_sharpness > {row['threshold']:.3f}: identical {row['identical_tags']:.1%},"
                f" sharp differs {row['sharp_differs']:.1%}, sharp at 1 MP {row['sharp_at_1mp']:.1%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
