"""Where the served quality stage stands on real rated photos: BIQ2021 false alarms and score-vs-MOS correlation.

    python -m tooling.quality.real_photos                        # the held-out part (the one to report)
    python -m tooling.quality.real_photos --split train --json /tmp/biq-train.json

Every photo of the split (`tooling.quality.biq`) goes through what a `/v1/analyze?fields=quality` request does
(`tooling.quality.served`: decode with the learned model's preprocessing and the working image, metrics, quality_mos
through the server's ONNX Runtime backend, `quality_verdict`). The classical path alone (what a server without the
learned model returns) is reported next to it. --no-model skips the learned model.

Reported: false alarms (share of photos with MOS >= 0.72 that get any `defect` tag, and per tag), any-defect rate
per MOS band, Spearman/Pearson of the 0-100 score vs MOS (Spearman with a 95 % bootstrap interval), the same for the
one-line baseline log(var(Laplacian(gray))) (OpenCV 3x3 Laplacian, float64, on the file decoded gray at full size),
and the counts per source prefix. One process; ONNX Runtime and OpenCV on one thread each.

The held-out part is for reporting only: never tune thresholds, features or models on what this prints for it.
"""

import argparse
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from pipelines.quality import QualityReport
from pipelines.quality.thresholds import Thresholds, load_thresholds
from tooling.quality.biq import BIQ_FOLDER, GOOD_MOS, load_biq, source, split
from tooling.quality.served import served_quality

MOS_BANDS = ((0.0, 0.4), (0.4, GOOD_MOS), (GOOD_MOS, 1.01))
BOOTSTRAP = 2000


# --- statistics ---------------------------------------------------------------------------------------------------


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x), dtype=float)
    r[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=r)
    return sums[inverse] / counts[inverse]


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    return float(np.corrcoef(np.asarray(x, float), np.asarray(y, float))[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(ranks(np.asarray(x, float)), ranks(np.asarray(y, float)))


def spearman_interval(x: Sequence[float], y: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of Spearman's rho (BOOTSTRAP resamples of the photos)."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    rhos = [spearman(xa[i], ya[i]) for i in (rng.integers(0, len(xa), len(xa)) for _ in range(BOOTSTRAP))]
    low, high = np.nanpercentile(rhos, [2.5, 97.5])
    return float(low), float(high)


def correlations(values: Sequence[float], mos: Sequence[float]) -> dict:
    low, high = spearman_interval(values, mos)
    return {"spearman": spearman(values, mos), "spearman_95": [low, high], "pearson": pearson(values, mos)}


# --- the served path ----------------------------------------------------------------------------------------------


def log_laplacian_var(path: Path) -> float:
    """The one-line baseline: log(var(Laplacian(gray))) of the file decoded gray at full size."""
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return float(np.log(cv2.Laplacian(gray, cv2.CV_64F).var() + 1e-12))


def evaluate_photos(rows: Sequence[tuple[Path, float]], thresholds_path: Path | None, use_model: bool) -> list[dict]:
    """Per photo: name, source, MOS, served and classical-only verdicts (score, level, defect tags), baseline."""
    thresholds = load_thresholds(thresholds_path)
    results = served_quality([p for p, _ in rows], thresholds_path, use_model)
    out: list[dict] = []
    for (path, mos), r in zip(rows, results, strict=True):
        row = {"image": path.name, "source": source(path.name), "mos": mos, "decode_scale": r.decode_scale}
        row["classical"] = _verdict(r.classical, thresholds)
        if use_model:
            row["served"] = _verdict(r.served, thresholds)
            row["model_quality"] = r.model_quality
        row["log_laplacian_var"] = log_laplacian_var(path)
        out.append(row)
    return out


def _verdict(report: QualityReport, thresholds: Thresholds) -> dict:
    defects = [t.name for t in report.tags if thresholds.tags[t.name].kind == "defect"]
    return {"score": report.score, "level": report.level, "defects": defects}


# --- the report ---------------------------------------------------------------------------------------------------


def path_summary(photos: Sequence[dict], key: str, defect_tags: Sequence[str]) -> dict:
    """False alarms, any-defect rate per MOS band, correlations and levels of one path ('served' / 'classical')."""
    good = [p for p in photos if p["mos"] >= GOOD_MOS]
    tagged = Counter(t for p in good for t in p[key]["defects"])
    bands = {}
    for low, high in MOS_BANDS:
        band = [p for p in photos if low <= p["mos"] < high]
        bands[f"{low:g}-{min(high, 1.0):g}"] = {
            "photos": len(band),
            "any_defect": sum(bool(p[key]["defects"]) for p in band) / max(len(band), 1),
        }
    return {
        "good_photos": len(good),
        "false_alarm_any": sum(bool(p[key]["defects"]) for p in good) / max(len(good), 1),
        "false_alarm_per_tag": {t: tagged[t] / max(len(good), 1) for t in defect_tags if tagged[t]},
        "any_defect_by_mos": bands,
        "score_vs_mos": correlations([p[key]["score"] for p in photos], [p["mos"] for p in photos]),
        "levels": dict(Counter(p[key]["level"] for p in photos)),
    }


def by_source(photos: Sequence[dict], paths: Sequence[str]) -> dict:
    out = {}
    for name in sorted({p["source"] for p in photos}):
        part = [p for p in photos if p["source"] == name]
        good = [p for p in part if p["mos"] >= GOOD_MOS]
        mos = [p["mos"] for p in part]
        row: dict = {"photos": len(part), "good_photos": len(good), "mean_mos": float(np.mean(mos))}
        for key in paths:
            row[key] = {
                "false_alarm_any": sum(bool(p[key]["defects"]) for p in good) / max(len(good), 1),
                "spearman": spearman([p[key]["score"] for p in part], mos),
            }
        row["log_laplacian_var_spearman"] = spearman([p["log_laplacian_var"] for p in part], mos)
        out[name] = row
    return out


def markdown(report: dict) -> str:
    paths = report["paths"]
    lines = [
        f"{report['photos']} photos ({report['split']} part), {report['good_photos']} with MOS >= {GOOD_MOS}; "
        f"thresholds version {report['thresholds_version']}; {report['seconds']:.0f} s "
        f"({report['seconds'] / max(report['photos'], 1) * 1000:.0f} ms/photo, 1 process).",
        "",
        "| | false alarms (any defect, MOS >= 0.72) | Spearman (95 % CI) | Pearson |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, s in paths.items():
        c = s["score_vs_mos"]
        lo, hi = c["spearman_95"]
        alarms = f"{s['false_alarm_any']:.1%}"
        lines.append(f"| {key} score | {alarms} | {c['spearman']:.3f} ({lo:.2f}-{hi:.2f}) | {c['pearson']:.3f} |")
    extra = {"quality_mos predicted MOS alone": "model_quality", "log(var(Laplacian(gray)))": "log_laplacian_var"}
    for label, key in extra.items():
        if key in report:
            c = report[key]
            lo, hi = c["spearman_95"]
            lines.append(f"| {label} | - | {c['spearman']:.3f} ({lo:.2f}-{hi:.2f}) | {c['pearson']:.3f} |")
    tags = sorted({t for s in paths.values() for t in s["false_alarm_per_tag"]})
    lines += ["", "False alarms per tag (share of MOS >= 0.72 photos):", "", "| tag | " + " | ".join(paths) + " |"]
    lines.append("| --- |" + " ---: |" * len(paths))
    for t in sorted(tags, key=lambda t: -max(s["false_alarm_per_tag"].get(t, 0) for s in paths.values())):
        lines.append(
            f"| `{t}` | " + " | ".join(f"{s['false_alarm_per_tag'].get(t, 0):.1%}" for s in paths.values()) + " |"
        )
    lines += ["", "Any defect tag by MOS band:", "", "| MOS | photos | " + " | ".join(paths) + " |"]
    lines.append("| --- | ---: |" + " ---: |" * len(paths))
    first = next(iter(paths.values()))["any_defect_by_mos"]
    for band, v in first.items():
        rates = " | ".join(f"{s['any_defect_by_mos'][band]['any_defect']:.1%}" for s in paths.values())
        lines.append(f"| {band} | {v['photos']} | {rates} |")
    header = " | ".join(f"{k} false alarms | {k} Spearman" for k in paths)
    lines += [
        "",
        "Per source:",
        "",
        f"| source | photos | MOS >= 0.72 | mean MOS | {header} | log-Laplacian Spearman |",
    ]
    lines.append("| --- | ---: | ---: | ---: |" + " ---: | ---: |" * len(paths) + " ---: |")
    for name, r in report["by_source"].items():
        cells = " | ".join(f"{r[k]['false_alarm_any']:.1%} | {r[k]['spearman']:.3f}" for k in paths)
        lines.append(
            f"| {name} | {r['photos']} | {r['good_photos']} | {r['mean_mos']:.3f} | {cells} | "
            f"{r['log_laplacian_var_spearman']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.quality.real_photos", description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=BIQ_FOLDER, help="BIQ2021 folder (mos.csv + images/)")
    parser.add_argument("--split", choices=("held-out", "train"), default="held-out")
    parser.add_argument("--limit", type=int, help="only the first N photos of the split (smoke runs)")
    parser.add_argument("--thresholds", type=Path, help="thresholds YAML (default: the packaged one)")
    parser.add_argument("--no-model", action="store_true", help="classical path only (no quality_mos)")
    parser.add_argument("--json", type=Path, help="write the summary and per-photo results here")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    thresholds = load_thresholds(args.thresholds)
    train, held = split(load_biq(args.folder))
    rows = held if args.split == "held-out" else train
    rows = rows[: args.limit] if args.limit else rows
    start = time.perf_counter()
    photos = evaluate_photos(rows, args.thresholds, not args.no_model)
    seconds = time.perf_counter() - start
    paths = ("served", "classical") if not args.no_model else ("classical",)
    defect_tags = [name for name, rule in thresholds.tags.items() if rule.kind == "defect"]
    mos = [p["mos"] for p in photos]
    report = {
        "command": "python -m tooling.quality.real_photos " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "split": args.split,
        "photos": len(photos),
        "good_photos": sum(m >= GOOD_MOS for m in mos),
        "thresholds_version": thresholds.version,
        "seconds": seconds,
        "decode_scales": dict(Counter(p["decode_scale"] for p in photos)),
        "paths": {key: path_summary(photos, key, defect_tags) for key in paths},
        "log_laplacian_var": correlations([p["log_laplacian_var"] for p in photos], mos),
        "by_source": by_source(photos, paths),
    }
    if "served" in paths:
        report["model_quality"] = correlations([p["model_quality"] for p in photos], mos)
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps({**report, "per_photo": photos}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
