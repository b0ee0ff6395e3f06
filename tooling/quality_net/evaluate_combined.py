"""Per-tag precision/recall/F1 of the classical tags, quality_net alone, and the two combined as the server does.

    python -m tooling.quality_net.evaluate_combined --photos 500:1000 --count 200 --cache /tmp/combined
    python -m tooling.quality_net.evaluate_combined --photos 0:500 --validation --count 50 --cache /tmp/combined --tune

The labelled set and its labels are those of `tooling.quality.evaluate` (same photos for the same
--photos/--count/--seed, same distortion sequence, same expected/allowed tags, clean photos counted as
negatives). One change, so that all paths are scored on the same samples: the distorted copies of a photo whose
clean version the classical OR the learned path tags are left out of that tag (evaluate.py: the classical only).
Three paths on every sample:

- classical: `tags_from_values(metrics, thresholds)` (no model);
- learned: quality_net probability >= 0.5 for the group of the same name (no metrics, no requires/excludes);
- combined: `tags_from_values(metrics, thresholds, model_probs)` with the probabilities rounded as
  `pipelines.quality.learned_quality` rounds them: exactly what a served `quality` result contains.

The model sees what the decode stage would give it: the distorted full-size photo through the config's
`PreprocessSpec` (`geometry_pil` + `normalize`), run by the server's `OnnxRuntimeBackend` in batches.

--cache DIR keeps the metrics (same JSON lines as `tooling.quality.evaluate --cache`, so either file can seed
the other) and the model outputs (keyed by the ONNX file's sha256): a re-run only re-tags. --tune sweeps
`model.confirm`/`model.alone` on the chosen photos (use the tuning pool, never 500:1000); --blur-samples tags the
blur-samples photos through `decode_image` as the server decodes them.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.quality.thresholds import load_thresholds
from serving.weights import sha256_of
from tooling.quality.distortions import KINDS
from tooling.quality.evaluate import DEFAULT_PHOTOS, EVALUATED_TAGS, select_photos
from tooling.quality_net.card import write_card_section
from tooling.quality_net.combined_inputs import BLUR_SAMPLES, build, load_model, served_photos, validation_photos
from tooling.quality_net.combined_scores import (
    LEARNED_THRESHOLD,
    PATHS,
    blur_samples,
    blur_table,
    evaluate_paths,
    markdown_table,
    tune,
)
from tooling.quality_net.dataset import HELD_OUT_FROM, MODEL_DIR


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tooling.quality_net.evaluate_combined", description=__doc__.split("\n")[0]
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
            f"`python -m tooling.quality_net.evaluate_combined --photos {args.photos} --count {args.count} "
            f"--seed {args.seed} --card`: {n_photos} held-out photos x (clean + {len(KINDS)} kinds x 5 levels) = "
            f"{len(samples)} samples, thresholds version {thresholds.version} (model.confirm {combine.confirm:g}, "
            f"model.alone {combine.alone:g}), ONNX sha256 `{sha256_of(entry.artifacts.onnx)[:12]}`.\n\n"
            f"{markdown_table(result)}"
        )
        write_card_section(MODEL_DIR / "MODEL_CARD.md", "combined", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
