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
import re
import shutil
from pathlib import Path

import numpy as np
import yaml

from serving.feature_head import FeatureHead
from tooling.quality_mos.features import QUALITY_MODEL_DIR, measure_all
from tooling.quality_mos.ridge import cross_validate, fit_ridge


def read_ratings(folder: Path) -> list[tuple[Path, float]]:
    with (folder / "mos.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    images = folder / "images" if (folder / "images").is_dir() else folder
    out = [(images / r["image"], float(r["mos"])) for r in rows]
    missing = [p.name for p, _ in out if not p.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} rated files are missing, e.g. {missing[:3]}")
    if len(out) < 20:
        raise ValueError(f"{len(out)} rated photos: at least 20 are needed to fit and cross-validate a score")
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
