"""Train the served quality model's heads (models/quality_mos) on the training part of biq2021-train, on CPU.

    python -m tooling.quality_mos.train --out models/quality_mos [--cache /tmp/quality_mos] [--workers 2]
    # ~15 min on 2 cores the first time (measuring ~9,800 images); about 5 minutes with the cache

Data (tooling.quality.biq: the held-out fifth is never read here):
- score: every training photo as stored, target its MOS; ridge strength by 5-fold cross-validation (Spearman);
- tags: the training photos (negatives when rated >= 0.6, unlabelled otherwise) and `biq_synthetic` copies of those
  rated >= 0.55 at 0.25 MP (clean + 6 distortions of any of the 17 kinds, levels 1-5, seed 1), labelled as the
  synthetic table labels them; logistic regression on the top 512 principal components of the standardised
  features (computed once, without labels), weight decay by 5-fold cross-validation grouped by photo (log loss).
Features: `features.measure_all` (the served decode and the classifier graph the served model is built from).

Writes to --out: head.npz (FeatureHead), the sha256 into config.yaml, report.json; and to --cache the measurements
and the out-of-fold predictions (`oof.json`) that `python -m tooling.quality_mos.tune` chooses thresholds on.
Checks that the grafted ONNX graph reproduces the numpy heads before writing anything.
"""

import argparse
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from serving.feature_head import FeatureHead, quality_graph
from serving.repository import read_labels
from tooling.quality.biq import BIQ_FOLDER, load_biq, split
from tooling.quality.biq_synthetic import synthetic_samples
from tooling.quality.distortions import KINDS
from tooling.quality.real_photos import correlations
from tooling.quality_mos.features import LAYERS, QUALITY_MODEL_DIR, classifier, measure_cached, quality_config
from tooling.quality_mos.heads import (
    L2,
    Projection,
    fit_logistic,
    logistic_out_of_fold,
    mean_log_loss,
    ridge_out_of_fold,
)
from tooling.quality_mos.ridge import cross_validate, fit_ridge

TRAIN_SEED = 1
TRAIN_MP = 0.25  # the model sees every photo at 256 px: distorting at 0.25 MP is as good and 4x cheaper than 1 MP
SOURCE_MOS = 0.55  # photos distorted for the tag heads
NEGATIVE_MOS = 0.6  # stored training photos that count as defect-free


def tag_labels(labels: tuple[str, ...], originals: list, samples: list) -> tuple[np.ndarray, np.ndarray]:
    """targets, mask (N x K): originals first, then the synthetic samples."""
    rows_t, rows_m = [], []
    for _, mos in originals:
        rows_t.append([0.0] * len(labels))
        rows_m.append([1.0 if mos >= NEGATIVE_MOS else 0.0] * len(labels))
    for s in samples:
        verdicts = [s.label(tag) for tag in labels]
        rows_t.append([1.0 if v == "positive" else 0.0 for v in verdicts])
        rows_m.append([0.0 if v == "excluded" else 1.0 for v in verdicts])
    return np.array(rows_t), np.array(rows_m)


def check_graph(head: FeatureHead, features: np.ndarray, tensors: np.ndarray) -> float:
    """Largest difference between the grafted ONNX graph and the numpy heads on a few images."""
    config = quality_config()
    base = classifier().artifacts.onnx
    graph = quality_graph(onnx.load(str(base)), head, config.input.size[0], "score", "probs")
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    score, probs = session.run(["score", "probs"], {config.input.name: tensors})
    want_score, want_probs = head.predict(features)
    return float(max(np.abs(score[:, 0] - want_score).max(), np.abs(probs - want_probs).max()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.quality_mos.train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=BIQ_FOLDER, help="biq2021-train folder (images/, mos.csv)")
    parser.add_argument("--out", type=Path, default=None, help="model folder to write head.npz/config sha into")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/quality_mos"), help="measurements + oof.json")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-photo", type=int, default=6, help="distorted copies per source photo")
    args = parser.parse_args(argv)
    if not (args.data / "mos.csv").exists():
        print(f"no {args.data / 'mos.csv'}: the BIQ2021 photos are read from ../shared/data", file=sys.stderr)
        return 2
    start = time.perf_counter()
    config = quality_config()
    labels = read_labels(config, QUALITY_MODEL_DIR)
    train, _ = split(load_biq(args.data))  # the held-out part is not even kept
    sources = [r for r in train if r[1] >= SOURCE_MOS]
    samples = list(synthetic_samples(sources, (TRAIN_MP,), args.per_photo, TRAIN_SEED, KINDS))
    print(f"{len(train)} training photos, {len(samples)} synthetic copies of {len(sources)}", flush=True)
    originals = measure_cached([p for p, _ in train], args.cache / "originals", args.workers)
    synthetic = measure_cached(samples, args.cache / f"synthetic-{args.per_photo}", args.workers)
    measured_s = time.perf_counter() - start

    x_orig = np.stack([m.features for m in originals]).astype(np.float64)
    mos = np.array([m for _, m in train])
    names = [p.name for p, _ in train]
    cv = cross_validate(x_orig, mos)
    alpha = max(cv, key=lambda a: cv[a])
    ridge = fit_ridge(x_orig, mos, alpha)
    score_oof = ridge_out_of_fold(x_orig, mos, names, alpha)

    x_all = np.concatenate([x_orig, np.stack([m.features for m in synthetic]).astype(np.float64)])
    targets, mask = tag_labels(labels, train, samples)
    groups = names + [s.path.name for s in samples]
    projection = Projection.fit(x_all)
    components = projection(x_all)
    losses, oof_by_l2 = {}, {}
    for l2 in L2:
        oof_by_l2[l2] = logistic_out_of_fold(projection, components, x_all, targets, mask, groups, l2)
        losses[l2] = mean_log_loss(oof_by_l2[l2], targets, mask)
        print(f"  l2 {l2:g}: out-of-fold log loss {losses[l2]:.4f}", flush=True)
    l2 = min(losses, key=lambda v: losses[v])
    probs_oof = oof_by_l2[l2]
    logistic = fit_logistic(projection, components, targets, mask, l2)
    score_w, score_b = ridge.on_standardisation(logistic.mean, logistic.scale)  # FeatureHead has one
    head = FeatureHead(LAYERS, logistic.mean, logistic.scale, score_w, score_b, logistic.weights, logistic.bias, labels)

    report = {
        "command": "python -m tooling.quality_mos.train " + " ".join(argv if argv is not None else sys.argv[1:]),
        "photos": len(train),
        "synthetic": len(samples),
        "features": int(x_orig.shape[1]),
        "measure_seconds": round(measured_s),
        "ridge_alpha": alpha,
        "cv_spearman_by_alpha": {str(a): round(s, 4) for a, s in cv.items()},
        "score_out_of_fold": correlations(score_oof, mos),
        "logistic_l2": l2,
        "oof_log_loss_by_l2": {str(k): round(v, 4) for k, v in losses.items()},
        "seconds": round(time.perf_counter() - start),
    }
    print(json.dumps(report, indent=1))
    oof = [
        {
            "key": m.key,
            "photo": g,
            "mos": float(mos[i]) if i < len(train) else samples[i - len(train)].mos,
            "kind": None if i < len(train) else samples[i - len(train)].kind,
            "level": 0 if i < len(train) else samples[i - len(train)].level,
            "metrics": m.metrics,
            "probs": [round(float(p), 5) for p in probs_oof[i]],
            "score": round(float(score_oof[i]), 5) if i < len(train) else None,
        }
        for i, (m, g) in enumerate(zip(originals + synthetic, groups, strict=True))
    ]
    (args.cache / "oof.json").write_text(json.dumps({"labels": labels, "items": oof}))
    if args.out is not None:
        from pipelines.decode import decode_image
        from pipelines.limits import DecodeLimits

        spec = {config.name: config.preprocess_spec()}
        tensors = np.stack(
            [decode_image(p.read_bytes(), spec, DecodeLimits(), 512).tensors[config.name] for p, _ in train[:4]]
        )
        error = check_graph(head, x_orig[:4], tensors.astype(np.float32))
        print(f"grafted ONNX vs numpy heads: max difference {error:.2e}")
        if error > 1e-3:
            print("the grafted graph does not reproduce the heads: nothing written", file=sys.stderr)
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        head.save(args.out / "head.npz")
        digest = hashlib.sha256((args.out / "head.npz").read_bytes()).hexdigest()
        config_file = args.out / "config.yaml"
        text = re.sub(r'sha256: "?[0-9a-f]{64}"?', f'sha256: "{digest}"', config_file.read_text())
        config_file.write_text(text)
        (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out / 'head.npz'} (sha256 {digest[:12]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
