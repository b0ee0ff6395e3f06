"""Re-fit the served score on your own rated photos: `imgserve quality calibrate FOLDER --out DIR` when FOLDER holds
a `mos.csv` (columns `image`, `mos`: a 0-1 rating per file in FOLDER or FOLDER/images).

The features are the served model's (`features.measure_all`); the ridge strength is chosen by 5-fold cross-validation
on your photos; the new score head replaces the old one inside a copy of the model folder (tag heads unchanged), with
`version` + 1 and the new sha256 in its config.yaml. Put DIR in place of models/quality_mos (or in a repository of
your own, IMGSERVE_MODEL_REPOSITORY): every quality result names the model version that scored it
(`model_version`), next to `thresholds_version`.
"""

import csv
import hashlib
import math
import re
import shutil
from pathlib import Path

import numpy as np
import yaml

from serving.feature_head import FeatureHead
from tooling.quality_mos.features import QUALITY_MODEL_DIR, measure_all
from tooling.quality_mos.ridge import cross_validate, fit_ridge

MIN_PHOTOS = 20


def read_ratings(folder: Path) -> list[tuple[Path, float]]:
    """The rated photos of `folder/mos.csv`. Refused, naming the row: a rating that is not a number from 0 to 1 (a
    NaN gave a model whose every score was NaN, and every quality request then failed; a 1-5 or 0-100 scale gave
    one score for every photo), a photo rated twice, ratings that are all the same, fewer than 20 photos."""
    with (folder / "mos.csv").open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a spreadsheet's BOM
        reader = csv.DictReader(f)
        columns = {name.strip().lower(): name for name in reader.fieldnames or ()}
        if not {"image", "mos"} <= set(columns):
            raise ValueError(f"{folder / 'mos.csv'}: needs the columns image and mos, has {reader.fieldnames}")
        rows = [(r[columns["image"]].strip(), r[columns["mos"]].strip()) for r in reader]
    images = folder / "images" if (folder / "images").is_dir() else folder
    out: list[tuple[Path, float]] = []
    seen: set[str] = set()
    for line, (name, text) in enumerate(rows, start=2):
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


def calibrate_mos(folder: Path, out: Path, source: Path = QUALITY_MODEL_DIR, workers: int = 2) -> dict:
    rows = read_ratings(folder)
    features = np.stack([m.features for m in measure_all([p for p, _ in rows], workers)]).astype(np.float64)
    mos = np.array([m for _, m in rows])
    cv = cross_validate(features, mos)
    alpha = max(cv, key=lambda a: cv[a])
    ridge = fit_ridge(features, mos, alpha)
    head = FeatureHead.load(source / "head.npz")
    weights, bias = ridge.on_standardisation(head.mean, head.scale)
    if not (np.all(np.isfinite(weights)) and np.isfinite(bias)):  # never write a head the server cannot score with
        raise ValueError("the fitted score is not finite (features of these photos could not be standardised)")
    new = FeatureHead(head.layers, head.mean, head.scale, weights, bias, head.tag_weights, head.tag_bias, head.labels)
    if out.resolve() != source.resolve():
        shutil.copytree(source, out, dirs_exist_ok=True)
    new.save(out / "head.npz")
    digest = hashlib.sha256((out / "head.npz").read_bytes()).hexdigest()
    config_file = out / "config.yaml"
    text = config_file.read_text()
    version = int(yaml.safe_load(text)["version"]) + 1
    text = re.sub(r'sha256: "?[0-9a-f]{64}"?', f'sha256: "{digest}"', text)
    text = re.sub(r"^version: .*$", f'version: "{version}"', text, count=1, flags=re.M)
    config_file.write_text(text)
    return {"photos": len(rows), "alpha": alpha, "cv_spearman": cv[alpha], "version": version, "sha256": digest}
