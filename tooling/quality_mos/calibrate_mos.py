"""Re-fit the served score on your own rated photos: `imgserve quality calibrate FOLDER --out DIR` when FOLDER holds
a `mos.csv` (columns `image`, `mos`: a 0-1 rating per file in FOLDER or FOLDER/images).

The features are the served model's (`features.measure_all`). By default the new score head is a **correction** of
the served one (ridge towards its weights, `ridge.correction`); `method="scratch"` fits one from zero as training
does. The ridge strength is chosen by 5-fold cross-validation on your photos. Before anything is written, the
re-fit is scored honestly, by **nested** cross-validation (the strength chosen again inside each outer fold, on the
other folds alone), and the served head is scored on the same photos (no fitting: it scores them as they are); the
gain has a paired bootstrap 95 % interval. The new head is written only when that interval lies above zero (the
re-fit is better on your photos beyond their sampling noise), or with `force=True`; otherwise `NotBetter` says both
figures. The head replaces the old one inside a copy of the model folder (tag heads unchanged), with the version
"<base number + 1>+<the new head's digest>" (`calibrated_version`) and its sha256 in its config.yaml, and a
MODEL_CARD.md and report.json describing the calibration. Put DIR in a repository of your own as its quality_mos
(IMGSERVE_MODEL_REPOSITORY; `--out` the packaged folder is refused): every quality result names the model version
that scored it (`model_version`), next to `thresholds_version`.
"""

import csv
import hashlib
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from pipelines.quality.thresholds import calibrated_version
from serving.feature_head import FeatureHead
from tooling.quality.real_photos import BOOTSTRAP, spearman
from tooling.quality_mos.calibration_card import write_card
from tooling.quality_mos.features import QUALITY_MODEL_DIR, measure_all
from tooling.quality_mos.ridge import (
    ALPHAS,
    CORRECTION_ALPHAS,
    RidgeHead,
    best_alpha,
    correction,
    cross_validate,
    fit_ridge,
    nested_cross_validate,
)

MIN_PHOTOS = 20
METHODS = ("correction", "scratch")


def _rating_rows(path: Path) -> list[tuple[int, str, str]]:
    """(line, image, rating text) of every row of the ratings file `path`. The line is the file's (`reader.line_num`:
    blank lines are skipped by the reader, so counting rows named the wrong line); a row without its image or its
    rating is refused naming its line (it was an AttributeError on None)."""
    with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a spreadsheet's BOM
        reader = csv.DictReader(f)
        columns = {name.strip().lower(): name for name in reader.fieldnames or () if name is not None}
        if not {"image", "mos"} <= set(columns):
            raise ValueError(f"{path}: needs the columns image and mos, has {reader.fieldnames}")
        rows = []
        for record in reader:
            name, text = (record.get(columns["image"]) or "").strip(), record.get(columns["mos"])
            if not name:
                raise ValueError(f"{path.name} line {reader.line_num}: no image name")
            if text is None:  # a row with fewer fields than the header: DictReader gives None
                raise ValueError(f"{path.name} line {reader.line_num} ({name}): no mos field")
            rows.append((reader.line_num, name, text.strip()))
    return rows


def read_ratings(folder: Path) -> list[tuple[Path, float]]:
    """The rated photos of `folder/mos.csv`. Refused, naming the line: a row without its image or rating, a rating
    that is not a number from 0 to 1 (a NaN gave a model whose every score was NaN, and every quality request then
    failed; a 1-5 or 0-100 scale gave one score for every photo), a photo rated twice; and ratings that are all the
    same, fewer than 20 photos."""
    rows = _rating_rows(folder / "mos.csv")
    images = folder / "images" if (folder / "images").is_dir() else folder
    out: list[tuple[Path, float]] = []
    seen: set[str] = set()
    for line, name, text in rows:
        try:
            rating = float(text)
        except ValueError:
            rating = math.nan
        if not math.isfinite(rating) or not 0.0 <= rating <= 1.0:
            raise ValueError(
                f"mos.csv line {line} ({name}): rating {text!r} is not a number from 0 to 1 (rescale other scales: "
                "1-5 as (r - 1) / 4, 0-100 as r / 100)"
            )
        if name in seen:
            raise ValueError(f"mos.csv line {line}: {name} is rated twice")
        seen.add(name)
        out.append((images / name, rating))
    missing = [p.name for p, _ in out if not p.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} rated files are missing, e.g. {missing[:3]}")
    if len(out) < MIN_PHOTOS:
        raise ValueError(f"{len(out)} rated photos: at least {MIN_PHOTOS} are needed to fit and cross-validate a score")
    if len({rating for _, rating in out}) < 2:
        raise ValueError("every photo has the same rating: a score cannot be fitted to that")
    return out


Interval = tuple[float, float]


@dataclass(frozen=True)
class Calibration:
    """A re-fitted score head and what it is worth on the rated photos, next to the served head."""

    method: str  # METHODS
    head: RidgeHead  # fitted on every photo, strength `head.alpha` by cross-validation
    photos: int
    refit: float  # Spearman of the nested cross-validation's out-of-fold predictions
    refit_95: Interval
    current: float  # Spearman of the served head's scores of the same photos
    current_95: Interval
    gain: float  # refit - current
    gain_95: Interval  # paired bootstrap over the photos
    fold_alphas: tuple[float, ...]  # the strength each outer fold chose

    @property
    def better(self) -> bool:
        """Written without --force only when the gain's 95 % interval lies above zero."""
        return self.gain_95[0] > 0.0

    def figures(self) -> str:
        def ci(interval: Interval) -> str:
            return f"95 % {interval[0]:.2f} to {interval[1]:.2f}"

        return (
            f"re-fit ({self.method}) {self.refit:.3f} ({ci(self.refit_95)}) by nested 5-fold cross-validation vs the "
            f"current head {self.current:.3f} ({ci(self.current_95)}) on the same {self.photos} photos; gain "
            f"{self.gain:+.3f} ({ci(self.gain_95)})"
        )


class NotBetter(Exception):
    """The re-fit is not better than the served head on the rated photos: nothing was written."""

    def __init__(self, calibration: Calibration) -> None:
        super().__init__(
            f"not written: the re-fitted score is not better than the current one on your photos (Spearman "
            f"{calibration.figures()}; it must be above zero). More rated photos narrow the interval; --force writes "
            "it anyway"
        )
        self.calibration = calibration


def paired_bootstrap(
    refit: np.ndarray, current: np.ndarray, targets: np.ndarray, seed: int = 0
) -> tuple[Interval, Interval, Interval]:
    """95 % percentile intervals of Spearman(refit), Spearman(current) and their difference, the photos resampled
    together (`BOOTSTRAP` times): the two figures share their photos, so their difference is much surer than
    either figure alone."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(targets), len(targets))
        a, b = spearman(refit[i], targets[i]), spearman(current[i], targets[i])
        rows.append((a, b, a - b))
    low, high = np.nanpercentile(np.array(rows), [2.5, 97.5], axis=0)
    return (low[0], high[0]), (low[1], high[1]), (low[2], high[2])


def served_ridge(head: FeatureHead) -> RidgeHead:
    return RidgeHead(
        head.mean.astype(np.float64), head.scale.astype(np.float64), head.score_weights.astype(np.float64),
        head.score_bias, math.inf,
    )  # fmt: skip


def refit_score(features: np.ndarray, mos: np.ndarray, served: RidgeHead, method: str = "correction") -> Calibration:
    """Re-fit the score head on (features, mos) and measure it honestly against `served` (both clipped to 0..1, as
    served)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: one of {', '.join(METHODS)}")
    fit, alphas = (correction(served), CORRECTION_ALPHAS) if method == "correction" else (fit_ridge, ALPHAS)
    alpha = best_alpha(cross_validate(features, mos, alphas, fit=fit))
    nested = nested_cross_validate(features, mos, alphas, fit=fit)
    refit_scores = np.clip(nested.predictions, 0.0, 1.0)
    current_scores = np.clip(served.predict(features), 0.0, 1.0)
    refit_95, current_95, gain_95 = paired_bootstrap(refit_scores, current_scores, mos)
    refit, current = spearman(refit_scores, mos), spearman(current_scores, mos)
    return Calibration(
        method, fit(features, mos, alpha), len(mos), refit, refit_95, current, current_95, refit - current, gain_95,
        nested.alphas,
    )  # fmt: skip


def check_out(out: Path, source: Path = QUALITY_MODEL_DIR) -> None:
    """Refuse (ValueError) an `out` that is, or lies in, the packaged model folder or `source`: `--force` rewrote the
    packaged head in place, and the shipped model was gone."""
    for packaged in {QUALITY_MODEL_DIR.resolve(), source.resolve()}:
        if out.resolve().is_relative_to(packaged):
            raise ValueError(
                f"--out {out} is the packaged model folder {packaged}: write the calibration elsewhere (e.g. "
                "MYREPO/quality_mos, beside copies of the other models/ folders it builds on) and point "
                "IMGSERVE_MODEL_REPOSITORY at MYREPO"
            )


def calibrate_mos(
    folder: Path,
    out: Path,
    source: Path = QUALITY_MODEL_DIR,
    workers: int = 2,
    method: str = "correction",
    force: bool = False,
) -> dict:
    """Re-fit, measure and (when better, or forced) write the model folder `out`; raises `NotBetter` otherwise."""
    check_out(out, source)  # before the photos are measured
    rows = read_ratings(folder)
    features = np.stack([m.features for m in measure_all([p for p, _ in rows], workers)]).astype(np.float64)
    mos = np.array([m for _, m in rows])
    head = FeatureHead.load(source / "head.npz")
    calibration = refit_score(features, mos, served_ridge(head), method)
    if not calibration.better and not force:
        raise NotBetter(calibration)
    weights, bias = calibration.head.on_standardisation(head.mean, head.scale)
    if not (np.all(np.isfinite(weights)) and np.isfinite(bias)):  # never write a head the server cannot score with
        raise ValueError("the fitted score is not finite (features of these photos could not be standardised)")
    new = FeatureHead(head.layers, head.mean, head.scale, weights, bias, head.tag_weights, head.tag_bias, head.labels)
    shutil.copytree(source, out, dirs_exist_ok=True)
    new.save(out / "head.npz")
    digest = hashlib.sha256((out / "head.npz").read_bytes()).hexdigest()
    config_file = out / "config.yaml"
    text = config_file.read_text()
    base_version = str(yaml.safe_load(text)["version"])
    version = calibrated_version(base_version, digest)
    text = re.sub(r'sha256: "?[0-9a-f]{64}"?', f'sha256: "{digest}"', text)
    text = re.sub(r"^version: .*$", f'version: "{version}"', text, count=1, flags=re.M)
    config_file.write_text(text)
    report = write_card(out, calibration, folder, base_version, version, digest, forced=not calibration.better)
    return {**report, "version": version, "sha256": digest, "calibration": calibration}
