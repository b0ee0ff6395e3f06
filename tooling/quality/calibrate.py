"""Calibrate tag thresholds on a user's own labelled photos.

Folder layout::

    FOLDER/good/*.jpg          photos that should get none of the defect tags
    FOLDER/<tag>/*.jpg         photos that should get <tag> (blurry, noisy, low_light, ...)

For each tag folder, in the config's order, the *first* condition of the tag's rule is re-tuned: every
midpoint between observed metric values is tried and the one with the best F1 (positives = the tag's
folder, negatives = good/, or also the other tags' folders with ``--negatives all``) wins; ties take the
middle of the best range. Other conditions, requires/excludes and the score are kept. The result is
written as a new YAML whose ``version`` is ``"<base number + 1>+<digest>"`` (`Thresholds.calibrated_version`): the
digest of the calibrated thresholds, so two calibrations of the same base that differ have different versions, and
every result they produce names which (`thresholds_version`).

    python -m tooling.quality.calibrate FOLDER --out thresholds.yaml [--base OLD.yaml] [--negatives all]
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from pipelines.decode import decode_image
from pipelines.errors import ImageInputError
from pipelines.limits import DecodeLimits
from pipelines.quality.metrics import compute_metrics
from pipelines.quality.tags import evaluate_rule, tags_from_values
from pipelines.quality.thresholds import DEFAULT_THRESHOLDS_PATH, Thresholds, dump_thresholds, load_thresholds
from tooling.quality.photo_files import list_photos

Values = dict[str, float | int | None]
MAX_CANDIDATES = 400


@dataclass(frozen=True)
class TagCalibration:
    """What calibration did for one tag."""

    tag: str
    metric: str
    old_threshold: float
    new_threshold: float
    old_f1: float
    new_f1: float
    positives: int
    negatives: int


def _f1(fires: np.ndarray, labels: np.ndarray) -> float:
    tp = float(np.sum(fires & labels))
    fp = float(np.sum(fires & ~labels))
    fn = float(np.sum(~fires & labels))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def _with_threshold(thresholds: Thresholds, tag: str, threshold: float) -> Thresholds:
    rule = thresholds.tags[tag]
    first = rule.conditions[0].model_copy(update={"threshold": threshold})
    new_rule = rule.model_copy(update={"conditions": (first, *rule.conditions[1:])})
    return thresholds.model_copy(update={"tags": {**thresholds.tags, tag: new_rule}})


def best_threshold(
    thresholds: Thresholds, tag: str, samples: Sequence[Values], labels: Sequence[bool]
) -> tuple[float, float, float]:
    """(best threshold, its F1, F1 at the current threshold) for `tag`'s first condition on labelled samples."""
    rule = thresholds.tags[tag]
    first, rest = rule.conditions[0], rule.conditions[1:]
    y = np.asarray(labels, bool)
    # requires/excludes refer to other tags, decided with the thresholds as they stand
    others = [{t.name for t in tags_from_values(s, thresholds)} - {tag} for s in samples]
    gate = np.array([set(rule.requires) <= o and not set(rule.excludes) & o for o in others], bool)
    implied = np.array([bool(set(rule.implied_by) & o) for o in others], bool)
    if rest:
        rest_rule = rule.model_copy(update={"conditions": rest})
        rest_holds = np.array([evaluate_rule(rest_rule, s)[0] for s in samples], bool)
    else:
        rest_holds = np.zeros(len(samples), bool) if rule.match == "any" else np.ones(len(samples), bool)
    raw = [s[first.metric] for s in samples]
    known = np.array([v is not None for v in raw])
    values = np.array([float(v) if v is not None else np.nan for v in raw])

    def f1_at(threshold: float) -> float:
        holds = known & ((values > threshold) if first.op == ">" else (values < threshold))
        combined = (holds | rest_holds) if rule.match == "any" else (holds & rest_holds)
        return _f1((combined | implied) & gate, y)

    if not known.any():
        return first.threshold, 0.0, 0.0
    unique = np.unique(values[known])
    candidates = (unique[:-1] + unique[1:]) / 2 if unique.size > 1 else unique
    if candidates.size > MAX_CANDIDATES:
        candidates = np.quantile(candidates, np.linspace(0, 1, MAX_CANDIDATES))
    scores = np.array([f1_at(float(c)) for c in candidates])
    best = np.flatnonzero(scores == scores.max())
    return float(candidates[best[len(best) // 2]]), float(scores.max()), f1_at(first.threshold)


def metrics_of_folder(
    folder: Path, thresholds: Thresholds, progress: Callable[[str], None] | None = None
) -> list[Values]:
    """Metric dicts of every photo directly in `folder`, decoded as the server decodes them (`decode_image`: reduced
    JPEG decode, orientation, colour profile, `thresholds.working_max_side`), so a calibrated threshold is compared
    with the values the server will measure (a full decode gave camera photos other noise estimates)."""
    out = []
    for path in list_photos(folder):
        try:
            photo = decode_image(path.read_bytes(), {}, DecodeLimits(), thresholds.working_max_side)
        except ImageInputError as exc:  # not an image, or one the server refuses too
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        metrics = compute_metrics(photo.working, (photo.width, photo.height), photo.native_rgb)
        out.append(metrics.as_dict())
        if progress:
            progress(str(path))
    return out


def calibrate(
    folder: str | Path, base: Thresholds | None = None, negatives: str = "good"
) -> tuple[Thresholds, list[TagCalibration]]:
    """New thresholds ("<number + 1>+<digest>") tuned on `folder`; see the module docstring for the layout."""
    thresholds = base or load_thresholds()
    base_version = thresholds.version
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root} does not exist" if not root.exists() else f"{root} is not a folder")
    if not (root / "good").is_dir():
        raise ValueError(f"{root} has no good/ folder of photos without defects")
    # hidden folders (.ipynb_checkpoints, .git) are no tag
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    by_tag = {d.name: metrics_of_folder(d, thresholds) for d in folders}
    if not by_tag["good"]:
        raise ValueError(f"{root / 'good'} holds no photo: without good photos a threshold cannot be tuned")
    unknown = set(by_tag) - set(thresholds.tags) - {"good"}
    if unknown:
        raise ValueError(f"folders {sorted(unknown)} are not tags; known: {', '.join(thresholds.tags)}")
    if not any(photos for tag, photos in by_tag.items() if tag != "good"):
        # refused, not written: a new version with nothing tuned looked like a calibration that had happened
        raise ValueError(
            f"{root} has no tag folder with photos beside good/ (e.g. {root / 'blurry'}): nothing to calibrate"
        )
    report = []
    for tag in thresholds.decision_order():  # requires/excludes then see already-calibrated tags
        if tag not in by_tag or not by_tag[tag]:
            continue
        negative_folders = ["good"] if negatives == "good" else [t for t in by_tag if t != tag]
        neg = [s for t in negative_folders for s in by_tag[t]]
        samples = by_tag[tag] + neg
        labels = [True] * len(by_tag[tag]) + [False] * len(neg)
        old = thresholds.tags[tag].conditions[0].threshold
        new, new_f1, old_f1 = best_threshold(thresholds, tag, samples, labels)
        if new_f1 > old_f1:
            thresholds = _with_threshold(thresholds, tag, new)
        else:
            new, new_f1 = old, old_f1
        metric = thresholds.tags[tag].conditions[0].metric
        report.append(TagCalibration(tag, metric, old, new, old_f1, new_f1, len(by_tag[tag]), len(neg)))
    description = f"calibrated on {root.name} from version {base_version}"
    return thresholds.model_copy(
        update={"version": thresholds.calibrated_version(), "description": description}
    ), report


def check_out(out: Path) -> None:
    """Refuse (ValueError) an `out` that is the packaged thresholds file: calibrating over it lost the shipped
    thresholds and their history (the version it was calibrated from, the description of how it was chosen)."""
    if out.resolve() == DEFAULT_THRESHOLDS_PATH.resolve():
        raise ValueError(
            f"--out {out} is the packaged thresholds file: write the calibration elsewhere and point "
            "IMGSERVE_QUALITY_THRESHOLDS at it"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: calibrate FOLDER and write the new thresholds YAML."""
    parser = argparse.ArgumentParser(prog="python -m tooling.quality.calibrate", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="folder with good/ and one sub-folder per tag")
    parser.add_argument("--out", type=Path, required=True, help="where to write the calibrated thresholds YAML")
    parser.add_argument("--base", type=Path, help="thresholds to start from (default: the packaged ones)")
    parser.add_argument("--negatives", choices=("good", "all"), default="good", help="negatives for each tag")
    args = parser.parse_args(argv)
    try:
        check_out(args.out)  # before the photos are measured
        new, report = calibrate(args.folder, load_thresholds(args.base), args.negatives)
    except (ValueError, yaml.YAMLError) as exc:  # a --base that is no thresholds file: one line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dump_thresholds(new, args.out)
    print(f"{'tag':24} {'metric':26} {'old':>9} {'new':>9} {'F1 old':>7} {'F1 new':>7} {'pos':>5} {'neg':>5}")
    for r in report:
        print(
            f"{r.tag:24} {r.metric:26} {r.old_threshold:9.4g} {r.new_threshold:9.4g} "
            f"{r.old_f1:7.3f} {r.new_f1:7.3f} {r.positives:5d} {r.negatives:5d}"
        )
    stacked = [r.tag for r in report if new.model.stack_for(r.tag) is not None]
    if stacked:  # said, not silent: the calibrated number would seem to take effect and does not
        print(
            f"note: with the learned model served (quality_mos), {', '.join(stacked)} are decided by its learned "
            "combination of probability and metrics: these thresholds apply where no model is served. Re-fit the "
            "model on your photos to move those (docs/QUALITY.md)",
            file=sys.stderr,
        )
    print(f"wrote {args.out} (version {new.version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
