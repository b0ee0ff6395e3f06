"""imgserve's quality tags (classical + quality_net, as served) against CleanVision's Imagelab on the same files.

    python -m tooling.quality_net.compare_cleanvision --held-out 200 --generate /tmp/cv-generated [--images DIR ...]

CleanVision (https://github.com/cleanlab/cleanvision) pulls pandas, matplotlib, imagehash, ...: it runs in its own
virtual environment (default `.venv-cleanvision/`, `python3 -m venv .venv-cleanvision &&
.venv-cleanvision/bin/pip install cleanvision`) through a subprocess that writes JSON; imgserve runs here.

Images: --held-out N adds the N held-out imagenet-samples photos of `tooling.quality.evaluate` (sorted positions
500-999, seed 0) as they are; --generate DIR writes a set with one known issue per image (darkened, brightened,
blurred, near-uniform, grayscale, strip crops of those photos) to DIR with `labels.json`; --images adds folders
(their `labels.json`, when present, labels them). Only the issue types both tools have are compared:

    CleanVision dark / light / blurry / low_information / grayscale / odd_aspect_ratio
    imgserve    low_light / overexposed / blurry / low_information / grayscale / odd_aspect_ratio

Per type: how many each flags, agreement (both or neither), Cohen's kappa, and precision/recall against the
generated set's labels (positives: images generated for that type; negatives: the other generated images).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipelines.quality.tags import tags_from_values
from pipelines.quality.thresholds import Thresholds, load_thresholds
from tooling.quality.distortions import apply_distortion
from tooling.quality.evaluate import DEFAULT_PHOTOS, load_rgb, select_photos
from tooling.quality_net.combined_inputs import load_model, served_photos

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLEANVISION_PYTHON = PROJECT_ROOT / ".venv-cleanvision" / "bin" / "python"
# CleanVision issue type -> imgserve tag
TYPES: dict[str, str] = {
    "dark": "low_light",
    "light": "overexposed",
    "blurry": "blurry",
    "low_information": "low_information",
    "grayscale": "grayscale",
    "odd_aspect_ratio": "odd_aspect_ratio",
}
# imgserve metrics shown next to each type's disagreements
EVIDENCE: dict[str, tuple[str, ...]] = {
    "dark": ("brightness_mean", "brightness_p95"),
    "light": ("brightness_mean", "blown_fraction", "brightness_p05"),
    "blurry": ("sharpness_min_direction",),
    "low_information": ("entropy_bits", "contrast_rms"),
    "grayscale": ("chroma_p99",),
    "odd_aspect_ratio": ("aspect_ratio",),
}
MODEL_GROUP = {"dark": "low_light", "light": "overexposed", "blurry": "blurry"}  # types quality_net has a group for
PER_TYPE = 30  # generated images per issue type

CLEANVISION_SCRIPT = """
import json, sys
from cleanvision import Imagelab
paths, types, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
lab = Imagelab(filepaths=paths, verbose=False)
lab.find_issues({t: {} for t in types}, n_jobs=int(sys.argv[4]), verbose=False)
rows = lab.issues.reset_index().to_dict(orient="records")
with open(out, "w") as f:
    json.dump({"version": lab.cleanvision_version, "rows": rows}, f, default=lambda o: o.item())
"""


# --- the generated set ------------------------------------------------------------------------------------------


def near_uniform(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo's mean colour plus 3-8 % of a very blurred copy: a blank, almost featureless frame."""
    x = rgb.astype(np.float32)
    mean = x.reshape(-1, 3).mean(axis=0)
    sigma = 0.08 * max(rgb.shape[:2])
    smooth = cv2.GaussianBlur(x, (0, 0), sigma)
    return np.clip(mean + rng.uniform(0.03, 0.08) * (smooth - mean), 0, 255).round().astype(np.uint8)


def strip(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A centred horizontal or vertical strip with aspect ratio 3-5 (a banner / panorama crop)."""
    h, w = rgb.shape[:2]
    ratio = rng.uniform(3.0, 5.0)
    if rng.random() < 0.5:  # horizontal
        keep = max(1, int(round(w / ratio)))
        top = (h - keep) // 2
        return rgb[top : top + keep]
    keep = max(1, int(round(h / ratio)))
    left = (w - keep) // 2
    return rgb[:, left : left + keep]


def generate(photos: Sequence[Path], out: Path, seed: int = 0, per_type: int = PER_TYPE) -> dict[str, str]:
    """Write `per_type` JPEGs (quality 92) per issue type, each from a photo drawn from `photos`; returns and
    writes `labels.json` {file name: CleanVision issue type}."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels: dict[str, str] = {}
    for issue in TYPES:
        for i in rng.choice(len(photos), size=min(per_type, len(photos)), replace=False):
            photo = photos[int(i)]
            rgb = load_rgb(photo)
            mode = "RGB"
            if issue == "dark":
                pixels = apply_distortion(rgb, "darken", int(rng.integers(3, 6)), rng)  # -2.2, -3, -4 EV
            elif issue == "light":
                pixels = apply_distortion(rgb, "brighten", int(rng.integers(3, 6)), rng)  # +1.5, +2, +2.7 EV
            elif issue == "blurry":
                pixels = apply_distortion(rgb, "gaussian_blur", int(rng.integers(3, 6)), rng)  # sigma 1.6-4 @512
            elif issue == "low_information":
                pixels = near_uniform(rgb, rng)
            elif issue == "grayscale":  # half saved as 1-channel JPEGs, half as RGB JPEGs with equal channels
                pixels = cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
                mode = "L" if len([v for v in labels.values() if v == issue]) % 2 == 0 else "RGB"
            else:
                pixels = strip(rgb, rng)
            name = f"{issue}__{photo.stem}.jpg"
            Image.fromarray(np.ascontiguousarray(pixels)).convert(mode).save(out / name, quality=92)
            labels[name] = issue
    (out / "labels.json").write_text(json.dumps(labels, indent=1))
    return labels


# --- the two tools ----------------------------------------------------------------------------------------------


def run_cleanvision(paths: Sequence[Path], python: Path, workers: int = 2) -> tuple[str, dict[str, dict]]:
    """CleanVision's version and its issues table (score and is_<type>_issue columns) keyed by file path."""
    if not python.exists():
        raise SystemExit(
            f"{python} is missing: python3 -m venv .venv-cleanvision && .venv-cleanvision/bin/pip install cleanvision"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cleanvision.json"
        args = [json.dumps([str(p) for p in paths]), json.dumps(list(TYPES)), str(out), str(workers)]
        env = {**os.environ, "TQDM_DISABLE": "1"}  # no progress bars
        subprocess.run([str(python), "-c", CLEANVISION_SCRIPT, *args], check=True, env=env)
        result = json.loads(out.read_text())
    return result["version"], {row["index"]: row for row in result["rows"]}


def run_imgserve(paths: Sequence[Path], thresholds: Thresholds) -> dict[str, dict]:
    """Per file: the served tags (classical + quality_net combined as in `pipelines.quality.quality_verdict`), the
    metrics and the model's probabilities."""
    entry, backend = load_model()
    out = {}
    for path, photo in zip(paths, served_photos(entry, backend, paths, thresholds.working_max_side), strict=True):
        probs = photo.anomaly["probabilities"]
        tags = [t.name for t in tags_from_values(photo.values, thresholds, probs)]
        out[str(path)] = {"tags": tags, "metrics": photo.values, "probabilities": probs}
    return out


# --- agreement ----------------------------------------------------------------------------------------------------


def cohen_kappa(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Cohen's kappa of two binary raters (1 = perfect agreement, 0 = chance level; nan when undefined)."""
    x, y = np.asarray(a, bool), np.asarray(b, bool)
    observed = float(np.mean(x == y))
    expected = float(np.mean(x) * np.mean(y) + np.mean(~x) * np.mean(~y))
    return (observed - expected) / (1.0 - expected) if expected < 1.0 else float("nan")


def precision_recall(flags: Sequence[bool], truth: Sequence[bool]) -> tuple[float, float]:
    f, t = np.asarray(flags, bool), np.asarray(truth, bool)
    tp = int(np.sum(f & t))
    return (tp / int(f.sum()) if f.any() else float("nan")), (tp / int(t.sum()) if t.any() else float("nan"))


def compare(
    paths: Sequence[Path], labels: dict[str, str], imgserve: dict[str, dict], cleanvision: dict[str, dict]
) -> list[dict]:
    """One row per issue type: counts, agreement and kappa on all images, P/R of both on the labelled ones."""
    rows = []
    keys = [str(p) for p in paths]
    labelled = [k for k in keys if k in labels]
    for issue, tag in TYPES.items():
        ours = [tag in imgserve[k]["tags"] for k in keys]
        theirs = [bool(cleanvision[k][f"is_{issue}_issue"]) for k in keys]
        truth = [labels[k] == issue for k in labelled]
        ours_l = [tag in imgserve[k]["tags"] for k in labelled]
        theirs_l = [bool(cleanvision[k][f"is_{issue}_issue"]) for k in labelled]
        p_ours, r_ours = precision_recall(ours_l, truth)
        p_theirs, r_theirs = precision_recall(theirs_l, truth)
        unlabelled = [k not in labels for k in keys]
        rows.append(
            {
                "type": issue,
                "tag": tag,
                "imgserve": int(sum(ours)),
                "cleanvision": int(sum(theirs)),
                "unlabelled_imgserve": int(sum(a and u for a, u in zip(ours, unlabelled, strict=True))),
                "unlabelled_cleanvision": int(sum(b and u for b, u in zip(theirs, unlabelled, strict=True))),
                "both": int(sum(a and b for a, b in zip(ours, theirs, strict=True))),
                "agreement": float(np.mean(np.equal(ours, theirs))),
                "kappa": cohen_kappa(ours, theirs),
                "imgserve_precision": p_ours,
                "imgserve_recall": r_ours,
                "cleanvision_precision": p_theirs,
                "cleanvision_recall": r_theirs,
                "only_imgserve": [k for k, a, b in zip(keys, ours, theirs, strict=True) if a and not b],
                "only_cleanvision": [k for k, a, b in zip(keys, ours, theirs, strict=True) if b and not a],
            }
        )
    return rows


def _ratio(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.2f}"


def markdown_table(rows: Sequence[dict]) -> str:
    lines = [
        "| CleanVision type / imgserve tag | flagged: imgserve | CleanVision | both | agreement | Cohen's kappa "
        "| unlabelled flagged: imgserve / CleanVision | generated: imgserve P / R | CleanVision P / R |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['type']} / {r['tag']} | {r['imgserve']} | {r['cleanvision']} | {r['both']} | {r['agreement']:.3f} | "
            f"{_ratio(r['kappa'])} | {r['unlabelled_imgserve']} / {r['unlabelled_cleanvision']} | "
            f"{_ratio(r['imgserve_precision'])} / {_ratio(r['imgserve_recall'])} | "
            f"{_ratio(r['cleanvision_precision'])} / {_ratio(r['cleanvision_recall'])} |"
        )
    return "\n".join(lines)


def describe(key: str, issue: str, imgserve: dict[str, dict], cleanvision: dict[str, dict]) -> str:
    """One disagreement: the file, imgserve's deciding metrics (and model probability), CleanVision's score."""
    ours = imgserve[key]
    metrics = ", ".join(f"{m} {ours['metrics'][m]:.3g}" for m in EVIDENCE[issue])
    if issue in MODEL_GROUP:
        metrics += f", p({MODEL_GROUP[issue]}) {ours['probabilities'][MODEL_GROUP[issue]]:.2f}"
    score = cleanvision[key][f"{issue}_score"]
    return f"{Path(key).name}: {metrics}; CleanVision {issue}_score {score:.3f}; imgserve tags {ours['tags']}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tooling.quality_net.compare_cleanvision", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--images", type=Path, nargs="*", default=[], help="folders of images (+ labels.json)")
    parser.add_argument("--held-out", type=int, default=0, help="add N held-out imagenet-samples photos as they are")
    parser.add_argument("--generate", type=Path, help="write the labelled generated set here and add it")
    parser.add_argument("--per-type", type=int, default=PER_TYPE, help="generated images per issue type")
    parser.add_argument("--cleanvision-python", type=Path, default=CLEANVISION_PYTHON)
    parser.add_argument("--thresholds", type=Path, help="thresholds YAML (default: the packaged one)")
    parser.add_argument("--workers", type=int, default=2, help="CleanVision processes")
    parser.add_argument("--examples", type=int, default=3, help="disagreements listed per type and side")
    parser.add_argument("--json", type=Path, help="write everything here as JSON")
    args = parser.parse_args(argv)

    paths: list[Path] = []
    labels: dict[str, str] = {}
    held_out = select_photos(DEFAULT_PHOTOS, 500, 1000, args.held_out) if args.held_out else []
    paths += held_out
    folders = list(args.images)
    if args.generate:
        generate(held_out or select_photos(DEFAULT_PHOTOS, 500, 1000, 200), args.generate, per_type=args.per_type)
        folders.append(args.generate)
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        paths += files
        if (folder / "labels.json").exists():
            labels |= {str(folder / n): t for n, t in json.loads((folder / "labels.json").read_text()).items()}
    if not paths:
        parser.error("no images: give --held-out, --generate and/or --images")
    thresholds = load_thresholds(args.thresholds)
    print(f"{len(paths)} images ({len(labels)} labelled), thresholds version {thresholds.version}", file=sys.stderr)
    imgserve = run_imgserve(paths, thresholds)
    version, cleanvision = run_cleanvision(paths, args.cleanvision_python, args.workers)
    rows = compare(paths, labels, imgserve, cleanvision)
    print(f"CleanVision {version}, imgserve thresholds version {thresholds.version} (+ quality_net)\n")
    print(markdown_table(rows))
    for r in rows:
        for side in ("only_imgserve", "only_cleanvision"):
            if r[side]:
                print(f"\n{r['type']}: {len(r[side])} {side.replace('_', ' ')}, e.g.")
                for key in r[side][: args.examples]:
                    print("  " + describe(key, r["type"], imgserve, cleanvision))
    if args.json:
        payload = {"cleanvision_version": version, "thresholds_version": thresholds.version, "rows": rows}
        payload["images"] = {k: {"imgserve": imgserve[k], "cleanvision": cleanvision[k]} for k in imgserve}
        args.json.write_text(json.dumps(payload, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
