"""Per-tag precision/recall/F1 of the classical tags, quality_net alone, and the two combined as the server does.

    python -m models.quality_net.evaluate_combined --photos 500:1000 --count 200 --cache /tmp/combined
    python -m models.quality_net.evaluate_combined --photos 0:500 --validation --count 50 --cache /tmp/combined --tune

The labelled set and its labels are those of `pipelines.quality.evaluate` (same photos for the same
--photos/--count/--seed, same distortion sequence, same expected/allowed tags, clean photos counted as
negatives). One change, so that all paths are scored on the same samples: the distorted copies of a photo whose
clean version the classical OR the learned path tags are left out of that tag (evaluate.py: the classical only).
Three paths on every sample:

- classical: `tags_from_values(metrics, thresholds)` (no model);
- learned: quality_net probability >= 0.5 for the group of the same name (no metrics, no requires/excludes);
- combined: `tags_from_values(metrics, thresholds, model_probs)` with the probabilities rounded as
  `serving.quality_report.anomaly_result` rounds them: exactly what a served `quality` result contains.

The model sees what the decode stage would give it: the distorted full-size photo through the config's
`PreprocessSpec` (`geometry_pil` + `normalize`), run by the server's `OnnxRuntimeBackend` in batches.

--cache DIR keeps the metrics (same JSON lines as `pipelines.quality.evaluate --cache`, so either file can seed
the other) and the model outputs (keyed by the ONNX file's sha256): a re-run only re-tags. --tune sweeps
`model.confirm`/`model.alone` on the chosen photos (use the tuning pool, never 500:1000); --blur-samples tags the
blur-samples photos through `decode_for_analysis` as the server decodes them.
"""

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from models.quality_net.card import write_card_section
from models.quality_net.dataset import HELD_OUT_FROM, MODEL_DIR, VALIDATION_EVERY
from pipelines.analysis_decode import decode_for_analysis
from pipelines.preprocess import PreprocessSpec, geometry_pil, normalize
from pipelines.quality.distortions import KINDS, apply_distortion
from pipelines.quality.evaluate import (
    DEFAULT_PHOTOS,
    EVALUATED_TAGS,
    Sample,
    counted_hits,
    load_rgb,
    select_photos,
)
from pipelines.quality.metrics import compute_metrics
from pipelines.quality.tags import tags_from_values
from pipelines.quality.thresholds import ModelCombination, Thresholds, load_thresholds
from pipelines.quality.working_image import native_crop, working_image
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.quality_report import QUALITY_MODEL, anomaly_result
from serving.repository import ModelArtifacts, ModelEntry, ModelRepository
from serving.weights import sha256_of

BLUR_SAMPLES = DEFAULT_PHOTOS.parent / "blur-samples"
PATHS = ("classical", "learned", "combined")
LEARNED_THRESHOLD = 0.5  # the model card's decision threshold
Probs = dict[str, float]


# --- the labelled set -------------------------------------------------------------------------------------------


def validation_photos(folder: Path, start: int, stop: int, count: int, seed: int = 0) -> list[Path]:
    """`count` photos drawn with `seed` from quality_net's validation split (sorted index % 10 == 9) in
    [start, stop): in the tuning pool but never trained on, so the model's probabilities there are honest."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    pool = [f for i, f in enumerate(files) if start <= i < stop and i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    picks = np.random.default_rng(seed).choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[i] for i in sorted(picks)]


def distorted_variants(rgb: np.ndarray, name: str, seed: int) -> Iterator[tuple[str, int, np.ndarray]]:
    """(kind, level, pixels): clean, then every kind at levels 1-5, drawn exactly as
    `pipelines.quality.evaluate.photo_samples` draws them (same generator, same order), so cached metrics
    from either script describe the same pixels."""
    rng = np.random.default_rng([seed, *name.encode()])
    yield "clean", 0, rgb
    for kind in KINDS:
        for level in range(1, 6):
            yield kind, level, apply_distortion(rgb, kind, level, rng)


@dataclass(frozen=True)
class PhotoJob:
    path: Path
    seed: int
    spec: PreprocessSpec
    metrics: bool  # compute metrics (False: they are cached)


def render_photo(job: PhotoJob) -> tuple[list[Sample] | None, np.ndarray]:
    """Metrics of every variant (when asked) and the model's HWC uint8 pixels of every variant."""
    cv2.setNumThreads(1)
    rgb = load_rgb(job.path)
    size = (rgb.shape[1], rgb.shape[0])
    samples: list[Sample] = []
    pixels = []
    for kind, level, degraded in distorted_variants(rgb, job.path.name, job.seed):
        if job.metrics:
            metrics = compute_metrics(working_image(degraded), size, native_crop(degraded))
            samples.append((job.path.name, kind, level, metrics.as_dict()))
        pixels.append(geometry_pil(Image.fromarray(degraded), job.spec))
    return (samples if job.metrics else None), np.stack(pixels)


# --- the model --------------------------------------------------------------------------------------------------


def load_model(weights: Path | None = None, threads: int = 2) -> tuple[ModelEntry, OnnxRuntimeBackend]:
    """quality_net's repository entry (optionally with another ONNX file) and a loaded ONNX Runtime backend."""
    entry = ModelRepository.scan().get(QUALITY_MODEL)
    if weights is not None:
        entry = ModelEntry(entry.config, entry.folder, entry.labels, ModelArtifacts(onnx=weights))
    elif not entry.available:
        raise SystemExit(f"{QUALITY_MODEL} is not servable: {entry.unavailable_reason}")
    backend = OnnxRuntimeBackend(intra_op_threads=threads)
    backend.load(entry)
    return entry, backend


def infer_probs(backend: OnnxRuntimeBackend, entry: ModelEntry, tensor: np.ndarray) -> list[dict]:
    """`anomaly_result` per image of an NCHW batch: {'probabilities': {label: p}, 'model_quality': q, ...}."""
    out = []
    size = entry.config.batching.max_batch_size
    for b in range(0, len(tensor), size):
        result = backend.infer(tensor[b : b + size])
        for probs, score in zip(result["probs"], result["score"], strict=True):
            out.append(anomaly_result({"probs": probs, "score": score}, entry.labels))
    return out


# --- tags and scores --------------------------------------------------------------------------------------------


def with_combination(thresholds: Thresholds, confirm: float, alone: float) -> Thresholds:
    """`thresholds` with another model.confirm / model.alone (score_weight kept)."""
    model = ModelCombination(confirm=confirm, alone=alone, score_weight=thresholds.model.score_weight)
    return thresholds.model_copy(update={"model": model})


def fired_tags(samples: Sequence[Sample], probs: Sequence[Probs], thresholds: Thresholds) -> dict[str, list[set[str]]]:
    """Per path, the set of tags each sample gets."""
    return {
        "classical": [{t.name for t in tags_from_values(m, thresholds)} for _, _, _, m in samples],
        "learned": [{g for g, p in pr.items() if p >= LEARNED_THRESHOLD} for pr in probs],
        "combined": [
            {t.name for t in tags_from_values(m, thresholds, pr)}
            for (_, _, _, m), pr in zip(samples, probs, strict=True)
        ],
    }


def doubtful_clean_tags(samples: Sequence[Sample], probs: Sequence[Probs], thresholds: Thresholds) -> dict[str, set]:
    """Per photo, the tags its clean version gets from the classical or the learned path. Their distorted copies are
    left out of that tag's evaluation for every path (a dark photo made noisy is still dark), so the three paths,
    and every (confirm, alone) with alone >= 0.5, are scored on the same samples: combined tags are a subset of
    classical | learned."""
    out: dict[str, set] = {}
    for (name, kind, _, values), p in zip(samples, probs, strict=True):
        if kind == "clean":
            learned = {g for g, v in p.items() if v >= LEARNED_THRESHOLD}
            out[name] = {t.name for t in tags_from_values(values, thresholds)} | learned
    return out


def tag_scores(
    samples: Sequence[Sample],
    fired: Sequence[set[str]],
    doubtful: dict[str, set],
    tags: Sequence[str] = EVALUATED_TAGS,
) -> dict:
    """Per tag: positives, tp, fp, fn, precision, recall, f1, clean_tagged, with the labels of
    `pipelines.quality.evaluate.counted_hits` (clean photos are negatives; copies of `doubtful` photos left out)."""
    clean_fired = [f for (_, kind, _, _), f in zip(samples, fired, strict=True) if kind == "clean"]
    out = {}
    for tag in tags:
        tp = fp = fn = 0
        for _, truth, hit in counted_hits(samples, fired, tag, doubtful):
            tp, fp, fn = tp + (hit and truth), fp + (hit and not truth), fn + (truth and not hit)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        out[tag] = {
            "positives": tp + fn,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "clean_tagged": sum(tag in f for f in clean_fired) / max(1, len(clean_fired)),
        }
    return out


def evaluate_paths(samples: Sequence[Sample], probs: Sequence[Probs], thresholds: Thresholds) -> dict[str, dict]:
    """{path: {tag: scores}} for the three paths."""
    doubtful = doubtful_clean_tags(samples, probs, thresholds)
    return {path: tag_scores(samples, f, doubtful) for path, f in fired_tags(samples, probs, thresholds).items()}


def markdown_table(result: dict[str, dict]) -> str:
    """tag | positives | P/R/F1 per path | clean tagged per path, plus a macro-mean row."""
    lines = [
        "| tag | positives | classical P / R / F1 | learned P / R / F1 | combined P / R / F1 "
        "| clean tagged cl. / le. / co. |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tag in EVALUATED_TAGS:
        cells = [
            f"{result[p][tag]['precision']:.2f} / {result[p][tag]['recall']:.2f} / **{result[p][tag]['f1']:.3f}**"
            for p in PATHS
        ]
        clean = " / ".join(f"{100 * result[p][tag]['clean_tagged']:.1f}%" for p in PATHS)
        lines.append(f"| {tag} | {result['classical'][tag]['positives']} | " + " | ".join(cells) + f" | {clean} |")
    macro = [np.mean([result[p][t]["f1"] for t in EVALUATED_TAGS]) for p in PATHS]
    lines.append("| **macro mean F1** | | " + " | ".join(f"**{m:.3f}**" for m in macro) + " | |")
    return "\n".join(lines)


# --- blur-samples -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedPhoto:
    """One real photo as the quality and anomaly stages see it."""

    name: str
    decode_scale: int
    values: dict  # QualityMetrics.as_dict()
    anomaly: dict  # anomaly_result(...)


def served_photos(
    entry: ModelEntry, backend: OnnxRuntimeBackend, paths: Sequence[Path], working_max_side: int = 512
) -> list[ServedPhoto]:
    """Each photo decoded once as the decode stage does (`decode_for_analysis`: model tensor + working image, reduced
    JPEG decode allowed), then the quality stage's metrics and the anomaly stage's model outputs."""
    out = []
    spec = entry.config.preprocess_spec()
    for path in paths:
        image = decode_for_analysis(path.read_bytes(), {QUALITY_MODEL: spec}, None, working_max_side)
        metrics = compute_metrics(image.working, (image.width, image.height), image.native_gray)
        anomaly = infer_probs(backend, entry, image.tensors[QUALITY_MODEL][None])[0]
        out.append(ServedPhoto(path.name, image.decode_scale, metrics.as_dict(), anomaly))
    return out


def blur_samples(photos: Sequence[ServedPhoto], thresholds: Thresholds) -> list[dict]:
    """Classical and combined tags of the blur-samples photos; ok: *_S not blurry, *_F / *_M blurry."""
    rows = []
    for photo in photos:
        classical = [t.name for t in tags_from_values(photo.values, thresholds)]
        combined = [t.name for t in tags_from_values(photo.values, thresholds, photo.anomaly["probabilities"])]
        rows.append(
            {
                "photo": photo.name,
                "decode_scale": photo.decode_scale,
                "sharpness_min_direction": round(photo.values["sharpness_min_direction"], 3),
                "p_blurry": photo.anomaly["probabilities"]["blurry"],
                "p_motion_blur": photo.anomaly["probabilities"]["motion_blur"],
                "classical": classical,
                "combined": combined,
                "ok": ("blurry" in combined) != Path(photo.name).stem.endswith("_S"),
            }
        )
    return rows


def blur_table(rows: Sequence[dict]) -> str:
    lines = [
        "| photo | decode scale | sharpness_min_direction | p(blurry) | p(motion_blur) | classical tags "
        "| combined tags |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['photo']} | 1/{r['decode_scale']} | {r['sharpness_min_direction']:.3f} | {r['p_blurry']:.3f} | "
            f"{r['p_motion_blur']:.3f} | {', '.join(r['classical'])} | {', '.join(r['combined'])} |"
        )
    return "\n".join(lines)


# --- tuning -----------------------------------------------------------------------------------------------------


def tune(
    samples: Sequence[Sample],
    probs: Sequence[Probs],
    thresholds: Thresholds,
    blur: Sequence[ServedPhoto] = (),
    focus: Sequence[str] = ("blurry", "noisy"),
    confirms: Sequence[float] = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    alones: Sequence[float] = tuple(np.round(np.arange(0.5, 1.001, 0.05), 2)),
) -> list[dict]:
    """Combined-path F1 for every (confirm, alone) with confirm <= alone: mean F1 over `focus`, macro F1 over
    every evaluated tag, the F1 per tag and how many `blur` photos come out right. Order: every blur photo right
    first, then best focus mean, then best macro F1."""
    rows = []
    doubtful = doubtful_clean_tags(samples, probs, thresholds)
    for confirm in confirms:
        for alone in alones:
            if alone < confirm:
                continue
            candidate = with_combination(thresholds, float(confirm), float(alone))
            fired = [
                {t.name for t in tags_from_values(m, candidate, pr)}
                for (_, _, _, m), pr in zip(samples, probs, strict=True)
            ]
            scores = tag_scores(samples, fired, doubtful)
            rows.append(
                {
                    "confirm": float(confirm),
                    "alone": float(alone),
                    "focus_f1": float(np.mean([scores[t]["f1"] for t in focus])),
                    "macro_f1": float(np.mean([s["f1"] for s in scores.values()])),
                    "f1": {t: round(s["f1"], 4) for t, s in scores.items()},
                    "blur_ok": sum(r["ok"] for r in blur_samples(blur, candidate)),
                }
            )
    return sorted(rows, key=lambda r: (r["blur_ok"] < len(blur), -r["focus_f1"], -r["macro_f1"]))


# --- data with caching ------------------------------------------------------------------------------------------


def build(
    photos: Sequence[Path],
    seed: int,
    entry: ModelEntry,
    backend: OnnxRuntimeBackend,
    metrics_file: Path | None,
    probs_file: Path | None,
    workers: int,
) -> tuple[list[Sample], list[Probs]]:
    """Samples (metrics) and model probabilities of every photo x variant, read from / written to the caches."""
    samples: list[Sample] | None = None
    outputs: list[Probs] | None = None
    if metrics_file and metrics_file.exists():
        rows = (json.loads(line) for line in metrics_file.read_text().splitlines())
        samples = [(name, kind, int(level), values) for name, kind, level, values in rows]
    if probs_file and probs_file.exists():
        outputs = [json.loads(line)[3] for line in probs_file.read_text().splitlines()]
    if samples is not None and outputs is not None:
        return samples, outputs
    spec = entry.config.preprocess_spec()
    jobs = [PhotoJob(p, seed, spec, samples is None) for p in photos]
    new_samples: list[Sample] = []
    new_outputs: list[Probs] = []
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        for i, (photo_samples, pixels) in enumerate(pool.map(render_photo, jobs)):
            new_samples += photo_samples or []
            new_outputs += [r["probabilities"] for r in infer_probs(backend, entry, normalize(pixels, spec))]
            if (i + 1) % 10 == 0 or i + 1 == len(jobs):
                elapsed = time.perf_counter() - start
                print(f"  {i + 1}/{len(jobs)} photos ({elapsed:.0f} s)", file=sys.stderr, flush=True)
    if samples is None:
        samples = new_samples
        if metrics_file:
            metrics_file.write_text("\n".join(json.dumps(s) for s in samples) + "\n")
    if len(new_outputs) != len(samples):
        raise SystemExit(f"{metrics_file} has {len(samples)} samples, the photos give {len(new_outputs)}: stale cache?")
    if probs_file:
        lines = (json.dumps([n, k, lv, p]) for (n, k, lv, _), p in zip(samples, new_outputs, strict=True))
        probs_file.write_text("\n".join(lines) + "\n")
    return samples, new_outputs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m models.quality_net.evaluate_combined", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--folder", type=Path, default=DEFAULT_PHOTOS, help="folder of source photos")
    parser.add_argument("--photos", default="500:1000", help="file-name-sorted index range START:STOP")
    parser.add_argument("--count", type=int, default=200, help="photos drawn from the range")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validation", action="store_true", help="draw only from quality_net's validation photos (index %% 10 == 9)"
    )
    parser.add_argument("--thresholds", type=Path, help="thresholds YAML (default: the packaged one)")
    parser.add_argument("--weights", type=Path, help="another quality_net ONNX file (default: the committed one)")
    parser.add_argument("--cache", type=Path, help="folder for the metrics and model-output caches")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tune", action="store_true", help="sweep model.confirm / model.alone on these photos")
    parser.add_argument("--blur-samples", action="store_true", help="also tag the blur-samples photos")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--card", action="store_true", help="write the table into MODEL_CARD.md (held-out runs)")
    args = parser.parse_args(argv)

    thresholds = load_thresholds(args.thresholds)
    entry, backend = load_model(args.weights)
    start, stop = (int(x) for x in args.photos.split(":"))
    select = validation_photos if args.validation else select_photos
    photos = select(args.folder, start, stop, args.count, args.seed)
    metrics_file = probs_file = None
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
        stem = f"{start}-{stop}-{args.count}-{args.seed}{'-validation' if args.validation else ''}"
        metrics_file = args.cache / f"metrics-{stem}.jsonl"
        probs_file = args.cache / f"probs-{stem}-{sha256_of(entry.artifacts.onnx)[:12]}.jsonl"
    samples, probs = build(photos, args.seed, entry, backend, metrics_file, probs_file, args.workers)
    n_photos = len({s[0] for s in samples})
    combine = thresholds.model
    print(
        f"{len(samples)} samples from {n_photos} photos ({args.photos}{', validation split' if args.validation else ''}"
        f"), thresholds version {thresholds.version} (confirm {combine.confirm:g}, alone {combine.alone:g}), "
        f"learned threshold {LEARNED_THRESHOLD}\n"
    )
    result = evaluate_paths(samples, probs, thresholds)
    print(markdown_table(result))
    report: dict = {
        "photos": args.photos,
        "validation_split": args.validation,
        "count": n_photos,
        "samples": len(samples),
        "seed": args.seed,
        "thresholds_version": thresholds.version,
        "model": {"onnx_sha256": sha256_of(entry.artifacts.onnx), **combine.model_dump()},
        "learned_threshold": LEARNED_THRESHOLD,
        "tags": {tag: {p: result[p][tag] for p in PATHS} for tag in EVALUATED_TAGS},
    }
    blur = []
    if args.tune or args.blur_samples:
        blur = served_photos(entry, backend, sorted(BLUR_SAMPLES.glob("*.*")), thresholds.working_max_side)
    if args.tune:
        rows = tune(samples, probs, thresholds, blur)
        report["tuning"] = rows
        print("\n| confirm | alone | mean F1 blurry+noisy | macro F1 | blurry | noisy | blur-samples ok |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows[:15]:
            print(
                f"| {r['confirm']:g} | {r['alone']:g} | {r['focus_f1']:.4f} | {r['macro_f1']:.4f} | "
                f"{r['f1']['blurry']:.4f} | {r['f1']['noisy']:.4f} | {r['blur_ok']}/{len(blur)} |"
            )
    if args.blur_samples:
        rows = blur_samples(blur, thresholds)
        report["blur_samples"] = rows
        print("\n" + blur_table(rows))
        print(f"\nblur-samples: {sum(r['ok'] for r in rows)}/{len(rows)} as expected (S not blurry, F/M blurry)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    if args.card:
        if args.validation or start < HELD_OUT_FROM:
            raise SystemExit("--card is for held-out runs (--photos from 500, without --validation)")
        section = (
            f"`python -m models.quality_net.evaluate_combined --photos {args.photos} --count {args.count} "
            f"--seed {args.seed} --card`: {n_photos} held-out photos x (clean + {len(KINDS)} kinds x 5 levels) = "
            f"{len(samples)} samples, thresholds version {thresholds.version} (model.confirm {combine.confirm:g}, "
            f"model.alone {combine.alone:g}), ONNX sha256 `{sha256_of(entry.artifacts.onnx)[:12]}`.\n\n"
            f"{markdown_table(result)}"
        )
        write_card_section(MODEL_DIR / "MODEL_CARD.md", "combined", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
