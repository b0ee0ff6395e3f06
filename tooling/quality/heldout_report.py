"""Issue #15's synthetic, resolution and blur-samples checks on the BIQ2021 held-out part, through the served path.

    python -m tooling.quality.heldout_report [--limit N] [--json FILE]     # ~15 min on 2 cores

1. Synthetic table: `biq_synthetic.synthetic_samples(held)` (every held-out photo at 0.25, 1 and 3 MP, clean + 4
   distorted copies each), per tag precision / recall / F1 for the served verdict and the classical one, macro F1
   over the seven scored tags, and blurry / noisy F1 per resolution. A distorted copy of a photo whose clean copy
   (same resolution) the same path already tags is left out of that tag, as in `tooling.quality.evaluate`.
2. Resolution independence: the clean copies at 0.25, 1, 3 and 12 MP (resized, re-encoded as JPEG 95): share of
   photos whose tags are identical at all four (all tags, and defect tags only), and the spread of the score.
3. blur-samples (../shared/data/blur-samples): every `_S` photo not blurry, every `_F` / `_M` blurry (served).

Reporting only: never tune on what this prints (tooling.quality.biq).
"""

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.quality.thresholds import Thresholds, load_thresholds
from tooling.quality.biq import BIQ_FOLDER, BLUR_SAMPLES, load_biq, split
from tooling.quality.biq_synthetic import (
    RESOLUTIONS_MP,
    SCORED_TAGS,
    Sample,
    clean_index,
    synthetic_samples,
    tag_counts,
)
from tooling.quality.served import ServedResult, served_quality

PATHS = ("served", "classical")
RESOLUTION_CHECK_MP = (0.25, 1.0, 3.0, 12.0)


def resolution_copies(rows: Sequence[tuple[Path, float]]) -> list[Sample]:
    """The clean copies of each (photo, MOS) at every size of the resolution check, photo by photo."""
    return [Sample(path, mos, mp, None, 0, 0) for path, mos in rows for mp in RESOLUTION_CHECK_MP]


def _tags(result: ServedResult, path: str) -> set[str]:
    return {t.name for t in getattr(result, path).tags}


def synthetic_table(samples: Sequence[Sample], results: Sequence[ServedResult], path: str) -> dict:
    clean_of, distorted = clean_index(samples), np.array([s.kind is not None for s in samples])
    resolution = np.array([s.megapixels for s in samples])
    tags = [_tags(r, path) for r in results]
    table: dict = {}
    for tag in SCORED_TAGS:
        labels = np.array([s.label(tag) for s in samples])
        flags = np.array([tag in t for t in tags])
        table[tag] = {"all": tag_counts(labels, flags, clean_of, distorted)}
        for mp in sorted(set(resolution)):
            table[tag][f"{mp:g}MP"] = tag_counts(labels, flags, clean_of, distorted, among=resolution == mp)
    table["macro_f1"] = float(np.mean([table[t]["all"]["f1"] for t in SCORED_TAGS]))
    return table


def resolution_check(clean: Sequence[Sample], results: Sequence[ServedResult], thresholds: Thresholds) -> dict:
    by_photo: dict[str, list[ServedResult]] = defaultdict(list)
    for s, r in zip(clean, results, strict=True):
        by_photo[s.path.name].append(r)
    same_all = same_defects = 0
    spreads = []
    differing: dict[str, int] = defaultdict(int)  # tag -> photos that have it at some sizes but not all
    for rs in by_photo.values():
        tag_sets = [frozenset(_tags(r, "served")) for r in rs]
        for tag in frozenset.union(*tag_sets) - frozenset.intersection(*tag_sets):
            differing[tag] += 1
        defect_sets = [frozenset(t for t in ts if thresholds.tags[t].kind == "defect") for ts in tag_sets]
        same_all += len(set(tag_sets)) == 1
        same_defects += len(set(defect_sets)) == 1
        scores = [r.served.score for r in rs]
        spreads.append(max(scores) - min(scores))
    n = max(len(by_photo), 1)
    s = np.array(spreads)
    return {
        "photos": len(by_photo),
        "resolutions_mp": list(RESOLUTION_CHECK_MP),
        "identical_tags": same_all / n,
        "identical_defect_tags": same_defects / n,
        "score_spread_median": float(np.median(s)),
        "score_spread_p95": float(np.percentile(s, 95)),
        "score_spread_within_5": float((s <= 5).mean()),
        "photos_whose_tag_differs": dict(sorted(differing.items(), key=lambda kv: -kv[1])),
    }


def blur_samples_check() -> list[dict]:
    files = (
        sorted(p for p in BLUR_SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        if BLUR_SAMPLES.is_dir()
        else []
    )
    rows = []
    for f, r in zip(files, served_quality(files, workers=1), strict=True):
        variant = f.stem.rsplit("_", 1)[-1].upper()
        tags = sorted(_tags(r, "served"))
        right = ("blurry" in tags) == (variant in ("F", "M"))
        rows.append({"photo": f.name, "tags": tags, "score": r.served.score, "right": right})
    return rows


def markdown(report: dict) -> str:
    lines = ["| tag | " + " | ".join(f"{p} P / R / F1" for p in PATHS) + " | positives |", "| --- |" + " ---: |" * 3]
    for tag in SCORED_TAGS:
        cells = []
        for p in PATHS:
            a = report["synthetic"][p][tag]["all"]
            cells.append(f"{a['precision']:.2f} / {a['recall']:.2f} / **{a['f1']:.3f}**")
        lines.append(
            f"| {tag} | " + " | ".join(cells) + f" | {report['synthetic']['served'][tag]['all']['positives']} |"
        )
    lines.append(
        "| **macro F1** | " + " | ".join(f"**{report['synthetic'][p]['macro_f1']:.3f}**" for p in PATHS) + " | |"
    )
    lines += ["", "| F1 by resolution (served) | " + " | ".join(f"{m:g} MP" for m in RESOLUTIONS_MP) + " |"]
    lines.append("| --- |" + " ---: |" * len(RESOLUTIONS_MP))
    for tag in SCORED_TAGS:
        row = report["synthetic"]["served"][tag]
        lines.append(
            f"| {tag} | "
            + " | ".join(f"{row.get(f'{m:g}MP', {}).get('f1', float('nan')):.3f}" for m in RESOLUTIONS_MP)
            + " |"
        )
    r = report["resolution"]
    lines += [
        "",
        f"Resolution independence ({r['photos']} held-out photos at "
        f"{', '.join(f'{m:g}' for m in r['resolutions_mp'])} MP): "
        f"identical tags {r['identical_tags']:.1%}, identical defect tags {r['identical_defect_tags']:.1%}; "
        f"score spread median {r['score_spread_median']:.1f}, 95th percentile {r['score_spread_p95']:.1f}, "
        f"within 5 points {r['score_spread_within_5']:.1%}. Photos whose tag differs between sizes: "
        + (", ".join(f"{t} {n}" for t, n in r["photos_whose_tag_differs"].items()) or "none")
        + ".",
        "",
        "blur-samples (served): "
        + ", ".join(
            f"{b['photo']} {'/'.join(b['tags']) or '-'} {b['score']:.0f}{'' if b['right'] else ' WRONG'}"
            for b in report["blur_samples"]
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tooling.quality.heldout_report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--folder", type=Path, default=BIQ_FOLDER)
    parser.add_argument("--limit", type=int, help="only the first N held-out photos (smoke runs)")
    parser.add_argument("--thresholds", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    thresholds = load_thresholds(args.thresholds)
    _, held = split(load_biq(args.folder))
    held = held[: args.limit] if args.limit else held
    start = time.perf_counter()
    samples = list(synthetic_samples(held))
    results = served_quality(samples, args.thresholds, workers=args.workers)
    clean = resolution_copies(held)
    known = {s.key: r for s, r in zip(samples, results, strict=True)}
    missing = [s for s in clean if s.key not in known]
    known.update(
        {s.key: r for s, r in zip(missing, served_quality(missing, args.thresholds, workers=args.workers), strict=True)}
    )
    report = {
        "command": "python -m tooling.quality.heldout_report " + " ".join(argv if argv is not None else sys.argv[1:]),
        "photos": len(held),
        "samples": len(samples),
        "thresholds_version": thresholds.version,
        "synthetic": {p: synthetic_table(samples, results, p) for p in PATHS},
        "resolution": resolution_check(clean, [known[s.key] for s in clean], thresholds),
        "blur_samples": blur_samples_check(),
    }
    report["seconds"] = round(time.perf_counter() - start)
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
