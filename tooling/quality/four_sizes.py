"""Issue #15's four-size check on BIQ2021 **training** photos: the place to try a change before the held-out report.

    python -m tooling.quality.four_sizes [--photos 1606] [--thresholds FILE]     # ~6 min for all on 2 cores

Every chosen training photo at 0.25, 1, 3 and 12 MP (resized, re-encoded as JPEG 95, as `heldout_report` makes the
held-out copies) through the served path (`served_quality`): the share of photos whose tags are identical at all four
sizes, defect tags alone, the score spread, and per tag the photos whose tag differs between sizes. The held-out fifth
is never read; on 2026-12-03 the held-out part flipped more often than the training part (8.4 % of photos against
5.2 %), so expect a figure here a few points above what the held-out report will give.
"""

import argparse
import json
import sys
from pathlib import Path

from pipelines.quality.thresholds import load_thresholds
from tooling.quality.biq import BIQ_FOLDER, load_biq, split
from tooling.quality.heldout_report import resolution_check, resolution_copies
from tooling.quality.served import served_quality


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.quality.four_sizes", description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=BIQ_FOLDER)
    parser.add_argument("--photos", type=int, help="only the first N training photos (default: all)")
    parser.add_argument("--thresholds", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    train, _ = split(load_biq(args.folder))
    train = train[: args.photos] if args.photos else train
    clean = resolution_copies(train)
    results = served_quality(clean, args.thresholds, workers=args.workers)
    print(json.dumps(resolution_check(clean, results, load_thresholds(args.thresholds)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
