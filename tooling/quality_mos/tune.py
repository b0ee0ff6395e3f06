"""Choose how quality_mos joins the classical tags and score, on the training part's out-of-fold predictions only.

    python -m tooling.quality_mos.tune [--cache /tmp/quality_mos] [--budget 0.01] [--tag-budget color_cast=0.025]
        [--write pipelines/quality/thresholds.yaml]

Reads `oof.json` written by `tooling.quality_mos.train` (for every training item, what heads fitted without its photo
predict). Per tag covered by the model, a grid of (confirm, alone) is tried with the rule "classical evidence and
p >= confirm, or p >= alone": the pair with the best F1 on the synthetic copies (labels as `biq_synthetic`, copies of
a photo whose clean copy is tagged left out) among those that tag at most `--budget` of the good training photos
(MOS >= 0.72) wins; ties go to the larger confirm and alone (fewer tags). For the relative defects (STACK_METRICS) a
learned stack (logistic on the model's logit and a few classical metrics, its own threshold chosen out of fold the
same way) replaces the pair when its out-of-fold F1 is higher. The score weight is the blend of classical and model
score with the best Spearman against MOS. Prints the `model:` block (--write puts it into a thresholds YAML) and
the table behind it. Never reads the held-out part.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from pipelines.quality.metrics import QualityMetrics
from pipelines.quality.scoring import score_quality
from pipelines.quality.tags import evaluate_rule, model_cannot_see
from pipelines.quality.thresholds import Thresholds, load_thresholds
from tooling.quality.biq import GOOD_MOS
from tooling.quality.biq_synthetic import Sample, tag_counts
from tooling.quality.real_photos import spearman

GRID = tuple(float(round(v, 2)) for v in np.arange(0.0, 1.0001, 0.05))


def classical_fires(thresholds: Thresholds, metrics: dict, tag: str) -> bool:
    rule = thresholds.tags[tag]
    fires = evaluate_rule(rule, metrics)[0]
    return fires or any(evaluate_rule(thresholds.tags[t], metrics)[0] for t in rule.implied_by)


def tune_tag(
    tag: str,
    classical: np.ndarray,
    p: np.ndarray,
    label: np.ndarray,
    good: np.ndarray,
    budget: float,
    clean_of: np.ndarray,
    unvetoed: np.ndarray | None = None,
) -> dict:
    """label: 1 positive, 0 negative, -1 excluded (synthetic only); good: the good stored photos (false alarms);
    clean_of: index of each distorted copy's clean copy (-1 for the others): a copy whose clean copy is tagged is
    left out of the tag, as the held-out evaluation does; unvetoed: classical evidence the model may not veto
    (`tags.model_cannot_see`: pixel-level, photo larger than the working image), as the served combination does."""
    unvetoed = np.zeros_like(classical) if unvetoed is None else unvetoed
    best: dict | None = None
    names = np.array(["excluded", "negative", "positive"])[label + 1]
    distorted = clean_of >= 0
    for confirm in GRID:
        for alone in GRID:
            if alone < confirm:
                continue
            fires = (classical & ((p >= confirm) | unvetoed)) | (p >= alone)
            alarms = float(fires[good].mean())
            c = tag_counts(names, fires, clean_of, distorted)
            row = {
                "confirm": confirm,
                "alone": alone,
                "f1": c["f1"],
                "false_alarms": alarms,
                "tp": c["tp"],
                "fp": c["fp"],
            }
            if alarms <= budget and (
                best is None or (row["f1"], confirm, alone) > (best["f1"], best["confirm"], best["alone"])
            ):
                best = row
    return {"tag": tag, "chosen": best}


# Tags decided by a learned stack (model logit + these classical metrics) instead of confirm/alone: relative defects
# (a dark night street vs an underexposed photo, warm light vs a colour cast) need both what the scene is and what
# the pixels measure.
STACK_METRICS: dict[str, tuple[str, ...]] = {
    "color_cast": (
        "cast_a", "cast_b", "cast_strength", "cast_ratio", "mean_a", "mean_b", "channel_offset_rg",
        "channel_offset_bg", "chroma_p99", "colourfulness", "saturation_mean",
    ),
    "overexposed": ("brightness_mean", "brightness_p50", "brightness_p95", "blown_fraction", "contrast_spread"),
    "low_light": ("brightness_mean", "brightness_p05", "brightness_p50", "brightness_p95", "crushed_fraction"),
    "low_contrast": ("contrast_spread", "contrast_rms", "brightness_p05", "brightness_p95", "entropy_bits"),
    "undersaturated": ("saturation_mean", "saturation_p95", "colourfulness", "chroma_p99"),
    "oversaturated": ("saturation_mean", "saturation_p95", "colourfulness", "chroma_p99"),
}  # fmt: skip
STACK_L2 = 1.0


def fit_stack(x: np.ndarray, y: np.ndarray, l2: float = STACK_L2) -> np.ndarray:
    """Logistic regression by Newton's method (x already has a bias column; the bias is not penalised)."""
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -50, 50)))
        gradient = x.T @ (p - y) + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def stack_design(items: list[dict], p: np.ndarray, metrics: tuple[str, ...], stats: dict) -> np.ndarray:
    columns = [np.ones(len(items)), np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))]
    for m in metrics:
        values = np.array([it["metrics"].get(m) if it["metrics"].get(m) is not None else stats[m][0] for it in items])
        columns.append((values - stats[m][0]) / stats[m][1])
    return np.stack(columns, axis=1)


def tune_stack(
    tag: str, items: list[dict], p: np.ndarray, label: np.ndarray, good: np.ndarray, budget: float, clean_of: np.ndarray
) -> dict:
    """Fit the stack out-of-fold (5 folds by photo) to choose fire_at, then on every labelled item."""
    metrics = STACK_METRICS[tag]
    stats = {}
    for m in metrics:
        v = np.array([it["metrics"][m] for it in items if it["metrics"].get(m) is not None], float)
        stats[m] = (float(v.mean()), float(v.std() + 1e-9))
    x = stack_design(items, p, metrics, stats)
    train = (label >= 0) | good
    y = (label == 1).astype(float)
    names = sorted({it["photo"] for it in items})
    fold_of = dict(zip(names, np.random.default_rng(0).integers(0, 5, len(names)), strict=True))
    fold = np.array([fold_of[it["photo"]] for it in items])
    oof = np.zeros(len(items))
    for f in range(5):
        w = fit_stack(x[train & (fold != f)], y[train & (fold != f)])
        oof[fold == f] = 1 / (1 + np.exp(-np.clip(x[fold == f] @ w, -50, 50)))
    chosen = tune_tag(tag, np.zeros(len(items), bool), oof, label, good, budget, clean_of)["chosen"]
    w = fit_stack(x[train], y[train])
    fire_at = chosen["alone"] if chosen else 1.0
    stack = {
        "bias": round(float(w[0]), 5),
        "model_weight": round(float(w[1]), 5),
        "terms": [
            {"metric": m, "mean": round(stats[m][0], 6), "scale": round(stats[m][1], 6), "weight": round(float(wi), 5)}
            for m, wi in zip(metrics, w[2:], strict=True)
        ],
        "fire_at": fire_at,
    }
    return {"tag": tag, "chosen": chosen, "stack": stack}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.quality_mos.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/quality_mos"))
    parser.add_argument("--thresholds", type=Path, help="thresholds YAML whose tag rules are used (default: packaged)")
    parser.add_argument("--budget", type=float, default=0.008, help="largest share of good photos one tag may flag")
    parser.add_argument(
        "--tag-budget", action="append", default=[], metavar="TAG=SHARE", help="a tag's own budget (repeatable)"
    )
    parser.add_argument("--write", type=Path, help="replace the model: block of this thresholds YAML")
    args = parser.parse_args(argv)
    data = json.loads((args.cache / "oof.json").read_text())
    labels, items = data["labels"], data["items"]
    thresholds = load_thresholds(args.thresholds)
    stored = np.array([it["kind"] is None and it["key"].endswith("|file") for it in items])
    good = stored & np.array([it["mos"] >= GOOD_MOS for it in items])
    probs = np.array([it["probs"] for it in items])
    clean_index = {it["photo"]: i for i, it in enumerate(items) if it["kind"] is None and not stored[i]}
    clean_of = np.array([clean_index.get(it["photo"], -1) if it["kind"] else -1 for it in items])
    budgets = {t: float(v) for t, v in (b.split("=") for b in args.tag_budget)}
    results = []
    for k, tag in enumerate(labels):
        classical = np.array([classical_fires(thresholds, it["metrics"], tag) for it in items])
        label = np.array(
            [
                -1
                if s
                else {"positive": 1, "negative": 0, "excluded": -1}[
                    Sample(Path(it["photo"]), it["mos"], 1.0, it["kind"], it["level"], 0).label(tag)
                ]
                for it, s in zip(items, stored, strict=True)
            ]
        )
        budget = budgets.get(tag, args.budget)
        unvetoed = np.array([model_cannot_see(thresholds.tags[tag], it["metrics"]) for it in items])
        plain = tune_tag(tag, classical, probs[:, k], label, good, budget, clean_of, unvetoed)
        if tag in STACK_METRICS:  # the stack only where it does better out of fold
            stacked = tune_stack(tag, items, probs[:, k], label, good, budget, clean_of)
            f1 = {key: (r["chosen"] or {"f1": -1.0})["f1"] for key, r in (("plain", plain), ("stack", stacked))}
            plain = stacked if f1["stack"] > f1["plain"] else plain
        results.append(plain)
    originals = [it for it in items if it["score"] is not None]
    mos = [it["mos"] for it in originals]
    classical_scores = np.array(
        [score_quality(QualityMetrics(**it["metrics"]), thresholds).classical_score for it in originals]
    )
    model_scores = np.array([100 * min(max(it["score"], 0.0), 1.0) for it in originals])
    blends = {w: spearman((1 - w) * classical_scores + w * model_scores, mos) for w in GRID}
    weight = max(blends, key=lambda w: (round(blends[w], 3), w))
    print("| tag | decision | F1 (out of fold) | false alarms (good training photos) |")
    print("| --- | --- | ---: | ---: |")
    for r in results:
        c = r["chosen"] or {"confirm": 1.0, "alone": 1.0, "f1": 0.0, "false_alarms": 0.0}
        how = f"stack, fire at {c['alone']:g}" if "stack" in r else f"confirm {c['confirm']:g}, alone {c['alone']:g}"
        print(f"| {r['tag']} | {how} | {c['f1']:.3f} | {c['false_alarms']:.1%} |")
    print(f"\nscore weight: Spearman by weight {json.dumps({str(k): round(v, 4) for k, v in blends.items()})}")
    block: dict = {"confirm": 1.0, "alone": 1.0, "score_weight": float(weight), "tags": {}}
    for r in results:
        c = r["chosen"] or {"confirm": 1.0, "alone": 1.0}
        if "stack" in r:
            block["tags"][r["tag"]] = {"stack": r["stack"]}
        else:
            block["tags"][r["tag"]] = {"confirm": float(c["confirm"]), "alone": float(c["alone"])}
    print("\n" + yaml.safe_dump({"model": block}, sort_keys=False, width=120))
    if args.write:
        text = args.write.read_text()
        head, _, rest = text.partition("\nmodel:\n")
        tail = rest[rest.index("\nscore:\n") :] if "\nscore:\n" in rest else ""
        args.write.write_text(
            head + "\n" + yaml.safe_dump({"model": block}, sort_keys=False, width=120).rstrip() + tail
        )
        print(f"wrote the model block into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
