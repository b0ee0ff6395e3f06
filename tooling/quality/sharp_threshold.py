"""Choose the positive `sharp` tag's threshold on `coarse_sharpness`, on the BIQ2021 training part only.

    python -m tooling.quality.sharp_threshold [--photos 400] [--sizes 150]     # ~2 min on 2 cores

Version 3 said `sharp` when `sharpness_min_direction > 0.82` on the 512-px working image. That measure moves by ~0.03
when the same photo arrives enlarged (resampling softens the top octave), so `sharp` flipped between sizes of one
photo for ~13 % of photos. `coarse_sharpness` is the same measure one octave lower, where resampling leaves it alone.
The threshold is the highest that keeps `sharp` on the real camera photos version 3 called sharp (the `_S` photos of
../shared/data/blur-samples that the sharp rule was designed on): BIQ2021's post-processed stock photos are crisper
at 256 px than camera photos are, so the value that best reproduces version 3 on them (printed too, ~0.847) would
take `sharp` away from every sharp camera photo. Printed with it: agreement with version 3 on training photos as
stored, and how often `sharp` differs between 0.25, 1, 3 and 12 MP copies of `--sizes` other training photos, for
the old rule and both thresholds. The held-out fifth is never read.
"""

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from pipelines.decode import decode_image
from pipelines.quality import compute_metrics
from tooling.quality.biq import BLUR_SAMPLES, load_biq, split
from tooling.quality.biq_synthetic import Sample
from tooling.quality.heldout_report import RESOLUTION_CHECK_MP, resolution_copies
from tooling.quality.served import map_chunks

OLD_METRIC, OLD_THRESHOLD = "sharpness_min_direction", 0.82
GRID = tuple(round(v, 4) for v in np.arange(0.75, 0.9001, 0.0025))


def _measure(items: Sequence[tuple[bytes | Sample, str]]) -> list[tuple[float, float]]:
    out = []
    for item, _ in items:
        data = item.encode() if isinstance(item, Sample) else item
        d = decode_image(data, {}, None, working_max_side=512)
        m = compute_metrics(d.working, (d.width, d.height), d.native_rgb)
        out.append((m.sharpness_min_direction, m.coarse_sharpness))
    return out


def flip_rate(values: np.ndarray, threshold: float) -> float:
    """Share of photos (rows) whose `value > threshold` differs between the sizes (columns)."""
    fires = values > threshold
    return float(np.mean(fires.any(axis=1) & ~fires.all(axis=1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=400, help="training photos as stored, for the agreement")
    parser.add_argument("--sizes", type=int, default=150, help="other training photos copied at four sizes")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    train, _ = split(load_biq())
    stored = train[0::2][: args.photos]
    resized = train[1::2][: args.sizes]
    sharp_camera = sorted(BLUR_SAMPLES.glob("*_S.*"))
    items: list[tuple[bytes | Sample, str]] = [(p.read_bytes(), p.name) for p, _ in stored]
    items += [(s, s.path.name) for s in resolution_copies(resized)]
    items += [(p.read_bytes(), p.name) for p in sharp_camera]
    chunks = [items[i : i + 16] for i in range(0, len(items), 16)]
    measured = np.array(map_chunks(_measure, chunks, args.workers))
    old, coarse = measured[: len(stored), 0] > OLD_THRESHOLD, measured[: len(stored), 1]
    camera = measured[len(items) - len(sharp_camera) :]
    by_size = measured[len(stored) : len(items) - len(sharp_camera)].reshape(len(resized), len(RESOLUTION_CHECK_MP), 2)
    kept = camera[camera[:, 0] > OLD_THRESHOLD, 1]  # coarse values of the camera photos version 3 called sharp
    agreement = {t: float(np.mean((coarse > t) == old)) for t in GRID}
    best_agreement = max(GRID, key=lambda t: agreement[t])
    chosen = max((t for t in GRID if (kept > t).all()), default=best_agreement) if kept.size else best_agreement
    print(f"{len(stored)} training photos as stored: version 3 says sharp for {old.mean():.1%}")
    for p, (fine, coarse_value) in zip(sharp_camera, camera, strict=True):
        print(f"  {p.name}: {OLD_METRIC} {fine:.3f}, coarse_sharpness {coarse_value:.3f}")
    print(f"{len(resized)} other training photos at {RESOLUTION_CHECK_MP} MP: sharp differs between sizes for")
    print(f"  version 3 ({OLD_METRIC} > {OLD_THRESHOLD}): {flip_rate(by_size[:, :, 0], OLD_THRESHOLD):.1%}")
    for name, t in (("best agreement on BIQ2021", best_agreement), ("chosen", chosen)):
        share = np.mean(coarse > t)
        print(
            f"  {name}: coarse_sharpness > {t:g}: {flip_rate(by_size[:, :, 1], t):.1%}"
            f" (agreement with version 3 {agreement[t]:.1%}, sharp for {share:.1%} as stored)"
        )
    drift = np.abs(by_size[:, 1:, :] - by_size[:, :1, :]).mean(axis=(0, 1))
    print(f"  mean |change| from the 0.25 MP copy: {OLD_METRIC} {drift[0]:.4f}, coarse_sharpness {drift[1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
