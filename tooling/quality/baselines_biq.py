"""Issue #15's baselines on the BIQ2021 held-out photos: CleanVision and the one-line log(var(Laplacian)) blur tag.

    python -m tooling.quality.baselines_biq --out /tmp/baselines [--limit N] [--json FILE]

The photos are exactly those issue #15 evaluates imgserve on: every held-out photo (`tooling.quality.biq`) and its
`synthetic_samples(held)` copies (clean + 4 distorted, at 0.25 / 1 / 3 MP), written once as JPEG files to
OUT/held-out/images/ (name: sha256 of `Sample.key`; files already there are reused) with OUT/held-out/manifest.json.

- CleanVision (cleanlab's `cleanvision`, AGPL: never a dependency of imgserve) runs its Imagelab with default
  thresholds on those files in its own virtual environment (`.venv-cleanvision/`: `python3 -m venv
  .venv-cleanvision && .venv-cleanvision/bin/pip install cleanvision`) through a subprocess that writes JSON; only
  the issue types dark, light,
  blurry, low_information, grayscale, odd_aspect_ratio. Its per-file results are cached in OUT/cleanvision.json.
- log(var(Laplacian(gray))) of the file as decoded (`real_photos.log_laplacian_var`) is tagged `blurry` below a
  threshold chosen on the **training part only**: best blurry F1 (ties: middle of the best range) on
  `synthetic_samples(300 training photos, resolutions=(1.0,), per_photo=2, seed=7)`.

Reported per baseline on the held-out set: false alarms (share of photos with MOS >= 0.72 whose clean copy gets a
defect tag; 1.0 MP is the headline), the synthetic table (`Sample.label`, "excluded" skipped, and distorted copies
of a photo whose clean copy at the same resolution the same baseline already tags with the tag left out; tags a
baseline cannot emit count as F1 0 in the macro over the seven SCORED_TAGS) and Spearman/Pearson vs MOS of the
baselines' scores on the clean 1.0 MP copies. Markdown to stdout, everything to --json.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from tooling.quality.biq import BIQ_FOLDER, GOOD_MOS, Row, load_biq, split
from tooling.quality.biq_synthetic import (
    RESOLUTIONS_MP,
    SCORED_TAGS,
    Sample,
    clean_index,
    synthetic_samples,
    tag_counts,
)
from tooling.quality.real_photos import correlations, log_laplacian_var

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# CleanVision (AGPL, never a dependency): its own virtual environment, `python3 -m venv .venv-cleanvision &&
# .venv-cleanvision/bin/pip install cleanvision`, driven through a subprocess that writes JSON.
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

TRAIN_PHOTOS = 300  # training photos the log-Laplacian threshold is chosen on
TRAIN_SEED = 7
DEFECT_TYPES = ("blurry", "dark", "light", "low_information")  # CleanVision types counted as defects
CLEANVISION_SCRIPT = """
import json, sys
from cleanvision import Imagelab
spec = json.load(open(sys.argv[1]))
lab = Imagelab(filepaths=spec["paths"], verbose=False)
lab.find_issues({t: {} for t in spec["types"]}, n_jobs=spec["n_jobs"], verbose=False)
rows = lab.issues.to_dict(orient="index")
with open(spec["out"], "w") as f:
    json.dump({"version": lab.cleanvision_version, "rows": rows}, f, default=lambda o: o.item())
"""


# --- the held-out files -------------------------------------------------------------------------------------------


def file_name(sample: Sample) -> str:
    return hashlib.sha256(sample.key.encode()).hexdigest()[:20] + ".jpg"


def write_set(samples: Sequence[Sample], folder: Path) -> tuple[list[Path], int]:
    """Each sample as folder/images/<hash>.jpg (kept when present) and folder/manifest.json; the files, in order,
    and how many were written."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    files, written, start = [], 0, time.perf_counter()
    for i, sample in enumerate(samples, 1):
        path = images / file_name(sample)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(sample.encode())
            os.replace(tmp, path)
            written += 1
        files.append(path)
        if i % 500 == 0 or i == len(samples):
            print(f"  files {i}/{len(samples)} ({written} new, {time.perf_counter() - start:.0f} s)", file=sys.stderr)
    manifest = [
        {"file": f.name, "key": s.key, "image": s.path.name, "mos": s.mos, "megapixels": s.megapixels}
        | {"kind": s.kind, "level": s.level, "seed": s.seed}
        for s, f in zip(samples, files, strict=True)
    ]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return files, written


def run_cleanvision(files: Sequence[Path], python: Path, cache: Path) -> tuple[str, dict[str, dict], int]:
    """CleanVision's version, per-file issues row ({type}_score, is_{type}_issue) keyed by file name, and how many
    files it ran on; files already in `cache` (same version) are not rerun (these issue types are per image, with
    absolute thresholds)."""
    if not python.exists():
        raise SystemExit(
            f"{python} is missing: python3 -m venv .venv-cleanvision && {python.parent}/pip install cleanvision"
        )
    cached = json.loads(cache.read_text()) if cache.exists() else {"version": None, "rows": {}}
    rows: dict[str, dict] = cached["rows"]
    todo = [f for f in files if f.name not in rows]
    version = cached["version"]
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
            payload = {"paths": [str(f) for f in todo], "types": list(TYPES), "n_jobs": 1, "out": str(out)}
            spec.write_text(json.dumps(payload))
            env = {**os.environ, "TQDM_DISABLE": "1"}
            subprocess.run([str(python), "-c", CLEANVISION_SCRIPT, str(spec)], check=True, env=env)
            result = json.loads(out.read_text())
        if version not in (None, result["version"]):
            raise SystemExit(f"{cache} holds CleanVision {version}, this is {result['version']}: remove the cache")
        version = result["version"]
        rows |= {Path(k).name: v for k, v in result["rows"].items()}
        cache.write_text(json.dumps({"version": version, "rows": rows}))
    return str(version), {f.name: rows[f.name] for f in files}, len(todo)


# --- counting -----------------------------------------------------------------------------------------------------


def choose_threshold(train: Sequence[Row], photos: int = TRAIN_PHOTOS, seed: int = TRAIN_SEED) -> dict:
    """The log-Laplacian `blurry` threshold (tag when value < threshold) with the best F1 on training samples."""
    picks = np.sort(np.random.default_rng(seed).choice(len(train), size=min(photos, len(train)), replace=False))
    samples = list(synthetic_samples([train[i] for i in picks], resolutions=(1.0,), per_photo=2, seed=seed))
    values = np.array([gray_log_laplacian(cv2.imdecode(np.frombuffer(s.encode(), np.uint8), 0)) for s in samples])
    labels = np.array([s.label("blurry") for s in samples])
    clean_of, distorted = clean_index(samples), np.array([s.kind is not None for s in samples])
    ordered = np.unique(values)
    candidates = (ordered[:-1] + ordered[1:]) / 2
    f1 = np.array([tag_counts(labels, values < t, clean_of, distorted)["f1"] for t in candidates])
    best = np.flatnonzero(f1 == f1.max())
    threshold = float(candidates[best[len(best) // 2]])
    counts = tag_counts(labels, values < threshold, clean_of, distorted)
    return {"threshold": threshold, "photos": len(picks), "samples": len(samples), "train_counts": counts}


def gray_log_laplacian(gray: np.ndarray) -> float:
    """log(var(Laplacian)) of a decoded gray image (as `real_photos.log_laplacian_var` does on a file)."""
    return float(np.log(cv2.Laplacian(gray, cv2.CV_64F).var() + 1e-12))


# --- the report ---------------------------------------------------------------------------------------------------


def baseline_report(samples: Sequence[Sample], flags: dict[str, np.ndarray], defects: Sequence[str]) -> dict:
    """False alarms per resolution and the synthetic table of one baseline (`flags`: imgserve tag -> per sample)."""
    mp = np.array([s.megapixels for s in samples])
    good_clean = np.array([s.kind is None and s.mos >= GOOD_MOS for s in samples])
    any_defect = np.any([flags[t] for t in defects], axis=0)
    alarms = {}
    for res in RESOLUTIONS_MP:
        good = good_clean & (mp == res)
        n = max(int(good.sum()), 1)
        per_tag = {t: float(np.sum(f & good)) / n for t, f in flags.items()}
        alarms[f"{res:g}"] = {"good_photos": int(good.sum()), "any": float(np.sum(any_defect & good)) / n} | {
            "per_tag": per_tag
        }
    clean_of, distorted = clean_index(samples), np.array([s.kind is not None for s in samples])
    table = {}
    for tag in (t for t in SCORED_TAGS if t in flags):
        labels = np.array([s.label(tag) for s in samples])
        row = tag_counts(labels, flags[tag], clean_of, distorted)
        row["left_out_clean_tagged"] = int(np.sum(distorted & flags[tag][clean_of] & (labels != "excluded")))
        row["left_out_positives"] = int(np.sum(distorted & flags[tag][clean_of] & (labels == "positive")))
        row["without_leave_out"] = tag_counts(labels, flags[tag], clean_of, np.zeros(len(samples), bool))
        for res in RESOLUTIONS_MP:
            row[f"f1_{res:g}"] = tag_counts(labels, flags[tag], clean_of, distorted, among=mp == res)["f1"]
        table[tag] = row
    macro_all = sum(r["f1"] for r in table.values()) / len(SCORED_TAGS)
    macro_covered = sum(r["f1"] for r in table.values()) / max(len(table), 1)
    return {"false_alarms": alarms, "synthetic": table, "macro_f1_7": macro_all, "macro_f1_covered": macro_covered}


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _r(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.2f}"


def markdown(report: dict) -> str:
    ll, cv = report["log_laplacian"], report["cleanvision"]
    base = report["baselines"]
    cv_names = {tag: tag if tag == t else f"{tag} ({t})" for t, tag in TYPES.items()}
    lines = [
        f"{report['photos']} held-out photos ({report['good_photos']} with MOS >= {GOOD_MOS}), "
        f"{report['files']} files (clean + 4 distorted copies at {' / '.join(f'{r:g}' for r in RESOLUTIONS_MP)} MP, "
        f"`synthetic_samples(held)`). CleanVision {cv['version']}, default thresholds, types "
        f"{', '.join(TYPES)}. log(var(Laplacian(gray))) tags `blurry` below **{ll['threshold']:.3f}**, the best "
        f"blurry F1 ({ll['train_counts']['f1']:.3f}) on {ll['samples']} training samples "
        f"({ll['photos']} photos of `split()[0]`, 1.0 MP, per_photo=2, seed {TRAIN_SEED}).",
        "",
        "False alarms: share of the photos with MOS >= 0.72 whose clean copy gets a defect tag (CleanVision: any of "
        "blurry, dark, light, low_information):",
        "",
        "| baseline | any defect, 1.0 MP | 0.25 MP | 3 MP | per tag at 1.0 MP |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, b in base.items():
        fa = b["false_alarms"]
        tags = ", ".join(
            f"{cv_names.get(t, t) if name == 'CleanVision' else t} {_pct(v)}" for t, v in fa["1"]["per_tag"].items()
        )
        lines.append(
            f"| {name} | **{_pct(fa['1']['any'])}** | {_pct(fa['0.25']['any'])} | {_pct(fa['3']['any'])} | {tags} |"
        )
    lines += [
        "",
        "Synthetic table (all three resolutions; `Sample.label`, excluded skipped; distorted copies of a photo whose "
        "clean copy at that resolution the baseline already tags left out):",
        "",
        "| baseline | tag | positives | TP | FP | FN | precision | recall | F1 | F1 0.25 / 1 / 3 MP "
        "| left out (positives) | F1 without leaving out |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, b in base.items():
        for tag, r in b["synthetic"].items():
            per_res = " / ".join(f"{r[f'f1_{res:g}']:.2f}" for res in RESOLUTIONS_MP)
            label = cv_names[tag] if name == "CleanVision" else tag
            lines.append(
                f"| {name} | {label} | {r['positives']} | {r['tp']} | {r['fp']} | {r['fn']} | {_r(r['precision'])} | "
                f"{_r(r['recall'])} | {r['f1']:.3f} | {per_res} | "
                f"{r['left_out_clean_tagged']} ({r['left_out_positives']}) | {r['without_leave_out']['f1']:.3f} |"
            )
    lines += [
        "",
        "| baseline | macro F1, 7 scored tags (others 0) | macro F1 over the tags it emits |",
        "| --- | ---: | ---: |",
    ]
    for name, b in base.items():
        covered = ", ".join(b["synthetic"])
        lines.append(f"| {name} | {b['macro_f1_7']:.3f} | {b['macro_f1_covered']:.3f} ({covered}) |")
    lines += [
        "",
        "Score vs MOS on the clean held-out copies at 1.0 MP (CleanVision scores: 0-1, higher = less of the issue):",
        "",
        "| value | Spearman (95 % bootstrap) | Pearson |",
        "| --- | ---: | ---: |",
    ]
    for label, c in report["score_vs_mos"].items():
        lo, hi = c["spearman_95"]
        lines.append(f"| {label} | {c['spearman']:.3f} ({lo:.2f}-{hi:.2f}) | {c['pearson']:.3f} |")
    s, n = report["seconds"], report["computed"]
    lines += [
        "",
        f"Times (2-core VM, 1 process): files {s['files']:.0f} s ({n['files_written']} written, the rest cached), "
        f"CleanVision {s['cleanvision']:.0f} s ({n['cleanvision_files']} files run, the rest cached), "
        f"log-Laplacian {s['log_laplacian']:.0f} s, threshold choice {s['threshold']:.0f} s.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.quality.baselines_biq", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="cache folder (files, manifest, CleanVision rows)")
    parser.add_argument("--folder", type=Path, default=BIQ_FOLDER, help="BIQ2021 folder (mos.csv + images/)")
    parser.add_argument("--limit", type=int, help="only the first N held-out photos (smoke runs)")
    parser.add_argument("--cleanvision-python", type=Path, default=CLEANVISION_PYTHON)
    parser.add_argument("--json", type=Path, help="write the summary and per-file results here")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    train, held = split(load_biq(args.folder))
    held = held[: args.limit] if args.limit else held
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    samples = list(synthetic_samples(held))
    files, written = write_set(samples, args.out / "held-out")
    seconds["files"] = time.perf_counter() - start

    start = time.perf_counter()
    version, cv_rows, cv_computed = run_cleanvision(files, args.cleanvision_python, args.out / "cleanvision.json")
    seconds["cleanvision"] = time.perf_counter() - start

    start = time.perf_counter()
    ll_values = np.array([log_laplacian_var(f) for f in files])
    seconds["log_laplacian"] = time.perf_counter() - start
    start = time.perf_counter()
    chosen = choose_threshold(train)
    seconds["threshold"] = time.perf_counter() - start
    print(f"log-Laplacian threshold {chosen['threshold']:.4f} ({seconds['threshold']:.0f} s)", file=sys.stderr)

    cv_flags = {tag: np.array([bool(cv_rows[f.name][f"is_{t}_issue"]) for f in files]) for t, tag in TYPES.items()}
    baselines = {
        "CleanVision": baseline_report(samples, cv_flags, [TYPES[t] for t in DEFECT_TYPES]),
        "log-Laplacian": baseline_report(samples, {"blurry": ll_values < chosen["threshold"]}, ["blurry"]),
    }
    clean1 = [i for i, s in enumerate(samples) if s.kind is None and s.megapixels == 1.0]
    mos = [samples[i].mos for i in clean1]
    score_vs_mos = {
        "log(var(Laplacian)), 1.0 MP copy": correlations([ll_values[i] for i in clean1], mos),
        "log(var(Laplacian)), original 512x512 file": correlations([log_laplacian_var(r[0]) for r in held], mos),
    }
    for t in ("blurry", "dark"):
        score_vs_mos[f"CleanVision {t}_score"] = correlations(
            [cv_rows[files[i].name][f"{t}_score"] for i in clean1], mos
        )
    report = {
        "command": "python -m tooling.quality.baselines_biq " + " ".join(argv if argv is not None else sys.argv[1:]),
        "photos": len(held),
        "good_photos": sum(m >= GOOD_MOS for _, m in held),
        "files": len(files),
        "cleanvision": {"version": version, "types": TYPES, "defect_types": DEFECT_TYPES},
        "log_laplacian": chosen,
        "baselines": baselines,
        "score_vs_mos": score_vs_mos,
        "seconds": seconds,
        "computed": {"files_written": written, "cleanvision_files": cv_computed},
    }
    print(markdown(report))
    if args.json:
        per_file = [
            {"file": f.name, "key": s.key, "log_laplacian_var": v, "cleanvision": cv_rows[f.name]}
            for s, f, v in zip(samples, files, ll_values, strict=True)
        ]
        args.json.write_text(json.dumps({**report, "per_file": per_file}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
