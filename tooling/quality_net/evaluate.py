"""Held-out evaluation of the committed quality_net, through the server's own repository entry and ONNX Runtime backend.

    python -m tooling.quality_net.evaluate [--photos 200]

Photos with sorted index >= 500 (never read by training), each rendered clean and with every distortion kind at
levels 1..5, preprocessed exactly as served. A group's positives are its own kinds at level >= 2; its negatives are
clean photos and every other kind except the side effects the training also ignores (`dataset.side_effects`).
Level-1 samples are shown per level but not counted. Writes the tables into MODEL_CARD.md.
"""

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.preprocess import normalize
from serving.backends.onnxruntime_backend import OnnxRuntimeBackend
from serving.repository import ModelArtifacts, ModelEntry, ModelRepository
from tooling.quality.distortions import KINDS
from tooling.quality_net.card import write_card_section
from tooling.quality_net.dataset import (
    FIRST_POSITIVE_LEVEL,
    GROUP_NAMES,
    GROUPS,
    MODEL_DIR,
    PhotoJob,
    evaluation_variants,
    held_out_photos,
    render_all,
    targets,
)


@dataclass(frozen=True)
class Predictions:
    """One row per rendered sample: its kind ('' = clean), level (0 = clean), group probabilities and score."""

    kinds: np.ndarray
    levels: np.ndarray
    probs: np.ndarray
    scores: np.ndarray


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (what scipy.stats.rankdata does by default)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def predict(backend: OnnxRuntimeBackend, entry: ModelEntry, photos: list[Path], seed: int) -> Predictions:
    spec = entry.config.preprocess_spec()
    variants = tuple(evaluation_variants())
    jobs = [PhotoJob(path, (seed, 3, i), spec, variants) for i, path in enumerate(photos)]
    probs, scores = [], []
    start = time.perf_counter()
    for i, pixels in enumerate(render_all(jobs, workers=2)):
        tensor = normalize(pixels, spec)
        for b in range(0, len(tensor), entry.config.batching.max_batch_size):
            out = backend.infer(tensor[b : b + entry.config.batching.max_batch_size])
            probs.append(out["probs"])
            scores.append(out["score"][:, 0])
        if (i + 1) % 25 == 0 or i + 1 == len(jobs):
            print(f"  {i + 1}/{len(jobs)} photos ({time.perf_counter() - start:.0f} s)", flush=True)
    kinds = np.array([v.kind or "" for v in variants] * len(photos))
    levels = np.array([v.level for v in variants] * len(photos))
    return Predictions(kinds, levels, np.concatenate(probs), np.concatenate(scores))


def group_table(p: Predictions) -> str:
    rows = ["| group | kinds | positives | negatives | precision | recall | F1 | false alarms on clean |"]
    rows.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    label_mask = [targets(k or None, int(lv)) for k, lv in zip(p.kinds, p.levels, strict=True)]
    labels = np.stack([t[0] for t in label_mask]) > 0.5
    counted = np.stack([t[1] for t in label_mask]) > 0.5
    fired = p.probs >= 0.5
    clean = p.levels == 0
    f1s = []
    for g, name in enumerate(GROUP_NAMES):
        pos, neg = counted[:, g] & labels[:, g], counted[:, g] & ~labels[:, g]
        tp, fp = int(np.sum(fired[:, g] & pos)), int(np.sum(fired[:, g] & neg))
        precision, recall = tp / max(1, tp + fp), tp / max(1, int(pos.sum()))
        f1 = 2 * precision * recall / max(1e-9, precision + recall)
        f1s.append(f1)
        rows.append(
            f"| {name} | {', '.join(GROUPS[name])} | {int(pos.sum())} | {int(neg.sum())} | {precision:.3f} | "
            f"{recall:.3f} | {f1:.3f} | {np.mean(fired[clean, g]):.1%} |"
        )
    rows.append(f"| **macro mean** | | | | | | **{np.mean(f1s):.3f}** | |")
    return "\n".join(rows)


def kind_table(p: Predictions) -> str:
    rows = [
        "| kind | group(s) | recall L1 | L2 | L3 | L4 | L5 | mean score L1 | L3 | L5 | Spearman(score, level) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    clean = p.levels == 0
    for kind in KINDS:
        groups = [g for g, name in enumerate(GROUP_NAMES) if kind in GROUPS[name]]
        own = p.kinds == kind
        # A sample is detected when every group its kind belongs to fires (motion blur: blurry and motion_blur).
        detected = np.all(p.probs[:, groups] >= 0.5, axis=1)
        recall = [np.mean(detected[own & (p.levels == lv)]) for lv in range(1, 6)]
        mean_score = [np.mean(p.scores[own & (p.levels == lv)]) for lv in (1, 3, 5)]
        rho = spearman(p.scores[own | clean], p.levels[own | clean])
        rows.append(
            f"| {kind} | {' + '.join(GROUP_NAMES[g] for g in groups)} | "
            + " | ".join(f"{r:.2f}" for r in recall)
            + " | "
            + " | ".join(f"{s:.2f}" for s in mean_score)
            + f" | {rho:.3f} |"
        )
    return "\n".join(rows)


def speed(backend: OnnxRuntimeBackend, entry: ModelEntry, repeats: int = 20) -> str:
    size = entry.config.input.shape
    parts = []
    for batch in (1, entry.config.batching.max_batch_size):
        x = np.random.default_rng(0).standard_normal((batch, *size)).astype(np.float32)
        backend.infer(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            backend.infer(x)
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        parts.append(f"batch {batch}: {median * 1000:.1f} ms ({batch / median:.0f} images/s)")
    return f"ONNX Runtime CPU, {backend.intra_op_threads} intra-op threads, median of {repeats}: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200, help="first N usable held-out photos")
    parser.add_argument("--weights", type=Path, default=None, help="evaluate this ONNX file instead (experiments)")
    parser.add_argument("--seed", type=int, default=20240)
    parser.add_argument("--no-card", action="store_true", help="print only; leave MODEL_CARD.md alone")
    args = parser.parse_args()

    entry = ModelRepository.scan().get("quality_net")
    if args.weights is not None:
        entry = ModelEntry(entry.config, entry.folder, entry.labels, ModelArtifacts(onnx=args.weights))
    elif not entry.available:
        raise SystemExit(f"quality_net is not servable: {entry.unavailable_reason}")
    backend = OnnxRuntimeBackend()
    backend.load(entry)
    photos = held_out_photos(entry.config.preprocess_spec())[: args.photos]
    print(
        f"{len(photos)} held-out photos ({photos[0].name} .. {photos[-1].name}) x {len(evaluation_variants())} renders"
    )
    predictions = predict(backend, entry, photos, args.seed)
    rho = spearman(predictions.scores, predictions.levels)
    section = (
        f"Held-out photos: {len(photos)} (the first usable ones from sorted index 500: `{photos[0].name}` .. "
        f"`{photos[-1].name}`), each clean + {len(KINDS)} kinds x 5 levels = {len(predictions.levels)} samples. "
        f"Threshold 0.5; positives from level {FIRST_POSITIVE_LEVEL}.\n\n"
        f"{group_table(predictions)}\n\n"
        f"Quality score: Spearman rank correlation with the distortion level (clean = 0) over all samples: "
        f"**{rho:.3f}** (negative = the score falls as the level rises). Mean score: clean "
        f"{np.mean(predictions.scores[predictions.levels == 0]):.3f}, "
        + ", ".join(f"L{lv} {np.mean(predictions.scores[predictions.levels == lv]):.3f}" for lv in range(1, 6))
        + ".\n\nPer kind (recall = every group of the kind fires):\n\n"
        f"{kind_table(predictions)}\n\n"
        f"Speed: {speed(backend, entry)}."
    )
    print(section)
    if not args.no_card and args.weights is None:
        write_card_section(MODEL_DIR / "MODEL_CARD.md", "evaluation", section)


if __name__ == "__main__":
    main()
