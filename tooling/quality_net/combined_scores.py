"""Tags and scores of `tooling.quality_net.evaluate_combined`: the tags each path (classical, learned, combined)
gives every sample, per-tag precision/recall/F1, the blur-samples check, the model.confirm / model.alone sweep and the
Markdown tables."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.quality.tags import tags_from_values
from pipelines.quality.thresholds import ModelCombination, Thresholds
from tooling.quality.evaluate import EVALUATED_TAGS, Sample, counted_hits
from tooling.quality_net.combined_inputs import Probs, ServedPhoto

PATHS = ("classical", "learned", "combined")
LEARNED_THRESHOLD = 0.5  # the model card's decision threshold


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
    `tooling.quality.evaluate.counted_hits` (clean photos are negatives; copies of `doubtful` photos left out)."""
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
