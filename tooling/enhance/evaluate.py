"""Does auto enhancement fix what the quality stage found, and leave good photos alone? (issue #17's acceptance)

    python -m tooling.enhance.evaluate [--photos 40] [--good] [--held-out]

1. Defects: BIQ2021 *training-part* photos (`--held-out`: the held-out fifth's, the check on photos auto mode was
   not chosen on) rated good (MOS >= 0.6, an evenly spread subset), each darkened, brightened, contrast-reduced and
   colour-cast by `tooling.quality.distortions` at levels 3-5 (where the quality stage must tag them), stored as
   JPEG q95. Per copy: the served quality verdict before, `enhance_image` in auto
   mode with those tags (output JPEG q95), the verdict after. Reported per kind: copies whose matching tag fired
   before, whose matching tag is gone after (of all copies and of those tagged), whose score rose.
2. Good photos (`--good`): the *held-out* fifth's photos with MOS >= 0.72 (never used to choose anything in auto
   mode: its operations and targets were set on the training part above). Per photo: the share auto changes at
   all, changes noticeably (mean absolute difference > 1 grey level from the same encode without enhancement), and
   the score change.

The quality verdicts are the server's (`tooling.quality.served`: decode, classical metrics, the learned model).
"""

import argparse
import io
import json
import time
from collections import defaultdict

import numpy as np
from PIL import Image

from pipelines.convert.options import ConvertOptions
from pipelines.enhance import EnhanceOptions, should_revert
from pipelines.enhance.image import enhance_image
from pipelines.limits import DecodeLimits
from pipelines.quality.thresholds import load_thresholds
from tooling.quality.biq import GOOD_MOS, load_biq, split
from tooling.quality.distortions import apply_distortion
from tooling.quality.served import defects, served_quality

KIND_TAG = {
    "darken": "low_light",
    "brighten": "overexposed",
    "contrast_change": "low_contrast",
    "color_cast": "color_cast",
}
LEVELS = (3, 4, 5)
SEED = 17
TRAIN_MIN_MOS = 0.6
OUTPUT = ConvertOptions(format="jpeg", quality=95)


def _jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=95, subsampling=0)
    return out.getvalue()


def _spread(items: list, count: int) -> list:
    step = max(1, len(items) // count)
    return items[::step][:count]


def _enhance_all(inputs: list[tuple[str, bytes]], tags: list[list[str]]) -> list[tuple[str, bytes, list[dict]]]:
    out = []
    for (key, data), found in zip(inputs, tags, strict=True):
        result, applied = enhance_image(data, EnhanceOptions(auto=True), OUTPUT, DecodeLimits(), found)
        out.append((key, result.data, applied))
    return out


def _served_auto(inputs: list[tuple[str, bytes]], workers: int) -> tuple[list, list, list]:
    """What the server's auto mode answers for each input: (verdict before, (key, output, applied), verdict after),
    with the "do no harm" rule applied (`should_revert`: when the score fell, the plain re-encode if it scores
    higher than the enhanced image)."""
    thresholds = load_thresholds()
    before = served_quality(inputs, workers=workers)
    enhanced = _enhance_all(inputs, [defects(r.served, thresholds) for r in before])
    after = served_quality([(k, d) for k, d, _ in enhanced], workers=workers)
    options = EnhanceOptions(auto=True)
    worse = [i for i, (b, a, e) in enumerate(zip(before, after, enhanced, strict=True))
             if should_revert(options, e[2], b.served.score, a.served.score)]  # fmt: skip
    if worse:  # the same conversion without the auto steps; kept when it scores higher (as the server does)
        plain = _enhance_all([inputs[i] for i in worse], [[] for _ in worse])
        rescored = served_quality([(k, d) for k, d, _ in plain], workers=workers)
        for i, p, r in zip(worse, plain, rescored, strict=True):
            if r.served.score > after[i].served.score:
                enhanced[i], after[i] = (p[0], p[1], []), r
    return before, enhanced, after


def defect_table(photos: int, workers: int, held_out: bool = False) -> dict:
    """The defects table on `photos` training-part photos, or (`held_out`) on the held-out part's: auto mode's
    operations and targets were chosen on the training part, so only the held-out table measures it unseen."""
    train, held = split(load_biq())
    chosen = _spread([path for path, mos in (held if held_out else train) if mos >= TRAIN_MIN_MOS], photos)
    rng = np.random.default_rng(SEED)
    inputs, kinds = [], []
    for path in chosen:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        for kind in KIND_TAG:
            for level in LEVELS:
                inputs.append((f"{path.name}|{kind}|{level}", _jpeg(apply_distortion(rgb, kind, level, rng))))
                kinds.append(kind)
    thresholds = load_thresholds()
    before, enhanced, after = _served_auto(inputs, workers)
    table: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    for kind, b, a, (_, _, applied) in zip(kinds, before, after, enhanced, strict=True):
        tag = KIND_TAG[kind]
        rose = bool(applied) and a.served.score > b.served.score  # an untouched (or reverted) copy did not rise
        row = table[kind]
        had = tag in defects(b.served, thresholds)
        gone = tag not in defects(a.served, thresholds)
        row["copies"] += 1
        row["tagged_before"] += had
        row["tag_absent_after"] += gone
        row["tagged_and_fixed"] += had and gone
        row["score_rose"] += rose
        row["tagged_and_rose"] += had and rose
    report = {}
    for kind, row in table.items():
        report[kind] = {
            **row,
            "tag_gone_share": round(row["tag_absent_after"] / row["copies"], 3),
            "fixed_share_of_tagged": round(row["tagged_and_fixed"] / max(1, row["tagged_before"]), 3),
            "score_rose_share": round(row["score_rose"] / row["copies"], 3),
            "score_rose_share_of_tagged": round(row["tagged_and_rose"] / max(1, row["tagged_before"]), 3),
        }
    keys = ("copies", "tagged_before", "tag_absent_after", "tagged_and_fixed", "score_rose", "tagged_and_rose")
    total = {k: sum(r[k] for r in table.values()) for k in keys}
    report["all"] = {
        **total,
        "tag_gone_share": round(total["tag_absent_after"] / total["copies"], 3),
        "fixed_share_of_tagged": round(total["tagged_and_fixed"] / max(1, total["tagged_before"]), 3),
        "score_rose_share": round(total["score_rose"] / total["copies"], 3),
        "score_rose_share_of_tagged": round(total["tagged_and_rose"] / max(1, total["tagged_before"]), 3),
    }
    return report


def good_table(workers: int) -> dict:
    _, held = split(load_biq())
    inputs = [(path.name, path.read_bytes()) for path, mos in held if mos >= GOOD_MOS]
    before, enhanced, after = _served_auto(inputs, workers)
    plain = _enhance_all(inputs, [[] for _ in inputs])  # same decode and encode, no operation
    changed = noticeable = 0
    drops = []
    for (_, data, applied), (_, reference, _), b, a in zip(enhanced, plain, before, after, strict=True):
        changed += bool(applied)
        x = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
        y = np.asarray(Image.open(io.BytesIO(reference)).convert("RGB"), dtype=np.int16)
        noticeable += float(np.abs(x - y).mean()) > 1.0
        drops.append(b.served.score - a.served.score)
    n = len(inputs)
    return {
        "photos": n,
        "changed_share": round(changed / n, 3),
        "noticeably_changed_share": round(noticeable / n, 3),
        "largest_score_drop": round(max(drops), 2),
        "score_drops_over_3": int(sum(d > 3 for d in drops)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=40, help="training photos to distort (default 40)")
    parser.add_argument("--good", action="store_true", help="also the held-out good photos (the final check only)")
    parser.add_argument("--held-out", action="store_true", help="distort held-out photos instead (the final check)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    start = time.time()
    report = {"defects": defect_table(args.photos, args.workers, args.held_out), "held_out": args.held_out}
    if args.good:
        report["good_held_out"] = good_table(args.workers)
    report["seconds"] = round(time.time() - start, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
