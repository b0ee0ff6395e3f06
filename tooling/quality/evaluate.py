"""Per-tag precision/recall of the classical tags on a generated labelled set of real photos.

The set: photos of imagenet-samples chosen by file-name-sorted index (>= 500 is reserved for evaluation,
< 500 for fitting and later training), each kept clean and degraded by every distortion of
`tooling.quality.distortions` at levels 1-5 with a seeded generator. Labels per tag and sample:

- positive: the distortion's `expected_tags` at that level contain the tag;
- excluded: a weaker level of a distortion that produces the tag, or an allowed side effect;
- excluded: any distorted copy of a photo whose *clean* version already has the tag (a dark photo
  made noisy is still dark: counted once, on the clean photo, not again on each of its 85 copies);
- negative: everything else, clean photos included (so tags on clean photos count as false positives).

    python -m tooling.quality.evaluate --photos 500:1000 --count 200 [--cache m.jsonl] [--fit]
"""

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pipelines.quality.metrics import compute_metrics
from pipelines.quality.tags import tags_from_values
from pipelines.quality.thresholds import Thresholds, load_thresholds
from pipelines.quality.working_image import native_crop, working_image
from tooling.quality.calibrate import Values, best_threshold
from tooling.quality.distortions import ALLOWED_TAGS, EXPECTED_TAGS, KINDS, apply_distortion, expected_tags

DEFAULT_PHOTOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "imagenet-samples"
EVALUATED_TAGS = sorted({tag for tags in EXPECTED_TAGS.values() for tag in tags})
Sample = tuple[str, str, int, Values]  # photo name, distortion kind ("clean"), level (0 = clean), metrics


def select_photos(folder: Path, start: int, stop: int, count: int, seed: int = 0) -> list[Path]:
    """`count` photos drawn with `seed` from file-name-sorted positions [start, stop) of `folder`."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))[start:stop]
    picks = np.random.default_rng(seed).choice(len(files), size=min(count, len(files)), replace=False)
    return [files[i] for i in sorted(picks)]


def photo_samples(path: Path, seed: int = 0) -> list[Sample]:
    """Metrics of one photo clean and under every distortion/level; deterministic per (seed, file name)."""
    rgb = load_rgb(path)
    rng = np.random.default_rng([seed, *path.name.encode()])
    size = (rgb.shape[1], rgb.shape[0])
    out: list[Sample] = [(path.name, "clean", 0, compute_metrics(working_image(rgb), size, native_crop(rgb)).as_dict())]
    for kind in KINDS:
        for level in range(1, 6):
            degraded = apply_distortion(rgb, kind, level, rng)
            metrics = compute_metrics(working_image(degraded), size, native_crop(degraded))
            out.append((path.name, kind, level, metrics.as_dict()))
    return out


def load_rgb(path: Path) -> np.ndarray:
    """Full-resolution upright RGB of a photo file."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def label(kind: str, level: int, tag: str) -> bool | None:
    """Ground truth for `tag` on a sample: True, False, or None (excluded from the evaluation)."""
    if kind == "clean":
        return False
    if tag in expected_tags(kind, level):
        return True
    if tag in EXPECTED_TAGS[kind] or tag in ALLOWED_TAGS[kind]:
        return None
    return False


def counted_hits(
    samples: Sequence[Sample], fired: Sequence[set[str]], tag: str, clean_tags: Mapping[str, set[str]]
) -> Iterator[tuple[int, bool, bool]]:
    """(level, truth, hit) for every sample that counts for `tag`: the truth of `label`, except that distorted
    copies of a photo whose clean original already carries `tag` (`clean_tags[name]`) are left out — the
    distortion did not cause the tag, so it is neither a true nor a false positive."""
    for (name, kind, level, _), got in zip(samples, fired, strict=True):
        truth = label(kind, level, tag)
        if truth is False and kind != "clean" and tag in clean_tags.get(name, set()):
            truth = None
        if truth is not None:
            yield level, truth, tag in got


def tag_table(samples: Sequence[Sample], thresholds: Thresholds) -> list[dict[str, float | int | str]]:
    """Per-tag counts, precision, recall (overall and at levels 3/4/5) and share of clean photos tagged."""
    fired = [{t.name for t in tags_from_values(m, thresholds)} for _, _, _, m in samples]
    clean_tags = {name: f for (name, kind, _, _), f in zip(samples, fired, strict=True) if kind == "clean"}
    rows = []
    for tag in EVALUATED_TAGS:
        tp = fp = fn = 0
        by_level = {3: [0, 0], 4: [0, 0], 5: [0, 0]}
        for level, truth, hit in counted_hits(samples, fired, tag, clean_tags):
            tp, fp, fn = tp + (hit and truth), fp + (hit and not truth), fn + (truth and not hit)
            if truth and level in by_level:
                by_level[level][0] += hit
                by_level[level][1] += 1
        n_clean = max(1, len(clean_tags))
        rows.append(
            {
                "tag": tag,
                "positives": tp + fn,
                "tp": tp,
                "fp": fp,
                "precision": tp / (tp + fp) if tp + fp else float("nan"),
                "recall": tp / (tp + fn) if tp + fn else float("nan"),
                **{f"recall_l{lv}": (h / n if n else float("nan")) for lv, (h, n) in by_level.items()},
                "clean_tagged": sum(tag in f for f in clean_tags.values()) / n_clean,
            }
        )
    return rows


def fit_thresholds(samples: Sequence[Sample], thresholds: Thresholds) -> list[tuple[str, float, float, float, float]]:
    """Best-F1 first-condition threshold per evaluated tag: (tag, current, best, F1 current, F1 best)."""
    out = []
    for tag in EVALUATED_TAGS:
        kept = [(m, t) for _, kind, level, m in samples if (t := label(kind, level, tag)) is not None]
        best, f1_best, f1_now = best_threshold(thresholds, tag, [m for m, _ in kept], [t for _, t in kept])
        out.append((tag, thresholds.tags[tag].conditions[0].threshold, best, f1_now, f1_best))
    return out


def markdown_table(rows: Iterable[dict[str, float | int | str]]) -> str:
    """The tag table as GitHub markdown."""
    head = "| tag | positives | TP | FP | precision | recall | recall L3 | recall L4 | recall L5 | clean tagged |"
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        cells = [r["tag"], r["positives"], r["tp"], r["fp"]] + [
            f"{float(r[k]):.2f}" for k in ("precision", "recall", "recall_l3", "recall_l4", "recall_l5")
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + f" | {100 * float(r['clean_tagged']):.1f}% |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build (or read from --cache) the labelled set and print the per-tag table."""
    parser = argparse.ArgumentParser(prog="python -m tooling.quality.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=DEFAULT_PHOTOS, help="folder of source photos")
    parser.add_argument("--photos", default="500:1000", help="file-name-sorted index range START:STOP")
    parser.add_argument("--count", type=int, default=200, help="photos drawn from the range")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thresholds", type=Path, help="thresholds YAML (default: the packaged one)")
    parser.add_argument(
        "--cache", type=Path, help="JSON-lines file of metrics: read if present (other options ignored), else written"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fit", action="store_true", help="also print best-F1 thresholds on this set")
    args = parser.parse_args(argv)
    thresholds = load_thresholds(args.thresholds)
    if args.cache and args.cache.exists():
        rows = (json.loads(line) for line in args.cache.read_text().splitlines())
        samples: list[Sample] = [(name, kind, int(level), values) for name, kind, level, values in rows]
    else:
        start, stop = (int(x) for x in args.photos.split(":"))
        photos = select_photos(args.folder, start, stop, args.count, args.seed)
        with ProcessPoolExecutor(args.workers) as pool:
            samples = [s for batch in pool.map(photo_samples, photos, [args.seed] * len(photos)) for s in batch]
        if args.cache:
            args.cache.write_text("\n".join(json.dumps(s) for s in samples) + "\n")
    n_photos = len({s[0] for s in samples})
    print(f"{len(samples)} samples from {n_photos} photos, thresholds version {thresholds.version}\n")
    print(markdown_table(tag_table(samples, thresholds)))
    if args.fit:
        print("\n| tag | threshold | best-F1 threshold | F1 now | best F1 |\n| --- | --- | --- | --- | --- |")
        for tag, now, best, f1_now, f1_best in fit_thresholds(samples, thresholds):
            print(f"| {tag} | {now:.4g} | {best:.4g} | {f1_now:.3f} | {f1_best:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
