"""Fit the MOS score on the training part of biq2021-train and report it once on the fixed held-out part.

    python -m tooling.quality_mos.train [--side 512] [--threads 2] [--out DIR]     # ~2-3 min on 2 CPU cores

Features: `features.photo_features` (pooled activations of the served classifier at `side` x `side`). The ridge
strength is chosen by 5-fold cross-validation on the training part only (tooling.quality.biq: the held-out fifth
is never seen while choosing or fitting); then the head is fitted on the whole training part and evaluated once on
the held-out part. `--out` keeps the head (`head.npz`: mean, scale, weights, bias — small, made here) and the
report (`report.json`). Not served yet: docs/QUALITY.md says what is measured and what is left.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from tooling.quality.biq import BIQ_FOLDER, load_biq, source, split
from tooling.quality.real_photos import correlations
from tooling.quality_mos.features import classifier, feature_session, photo_features
from tooling.quality_mos.ridge import cross_validate, fit_ridge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.quality_mos.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=BIQ_FOLDER, help="biq2021-train folder (images/, mos.csv)")
    parser.add_argument("--side", type=int, default=512, help="photos resized to side x side (0: as they are)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    parser.add_argument("--out", type=Path, default=None, help="folder for head.npz and report.json")
    args = parser.parse_args(argv)
    if not (args.data / "mos.csv").exists():
        print(f"no {args.data / 'mos.csv'}: the BIQ2021 photos are read from ../shared/data", file=sys.stderr)
        return 2
    entry = classifier()
    if not entry.available or entry.artifacts.onnx is None:
        print(f"{entry.name} is not available: {entry.unavailable_reason or 'no ONNX file'}", file=sys.stderr)
        return 2
    train, held = split(load_biq(args.data))
    session = feature_session(entry.artifacts.onnx, args.threads)
    start = time.perf_counter()
    x_train = np.stack(list(photo_features(entry, session, [p for p, _ in train], args.side or None)))
    x_held = np.stack(list(photo_features(entry, session, [p for p, _ in held], args.side or None)))
    seconds = time.perf_counter() - start
    y_train, y_held = np.array([m for _, m in train]), np.array([m for _, m in held])
    cv = cross_validate(x_train, y_train)
    alpha = max(cv, key=lambda a: cv[a])
    head = fit_ridge(x_train, y_train, alpha)
    predicted = head.predict(x_held)
    report = {
        "side": args.side,
        "photos": {"train": len(train), "held_out": len(held)},
        "features": int(x_train.shape[1]),
        "feature_ms_per_photo": round(1000 * seconds / (len(train) + len(held)), 1),
        "cv_spearman_by_alpha": {str(a): round(s, 4) for a, s in cv.items()},
        "alpha": alpha,
        "held_out": correlations(predicted, y_held),
        "held_out_by_source": {
            name: correlations(predicted[mask], y_held[mask])
            for name in sorted({source(p.name) for p, _ in held})
            if (mask := np.array([source(p.name) == name for p, _ in held])).sum() >= 10
        },
    }
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez(args.out / "head.npz", mean=head.mean, scale=head.scale, weights=head.weights, bias=head.bias)
        (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
