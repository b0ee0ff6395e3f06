"""What `imgserve quality calibrate` does for a user with 20, 60 or 200 rated photos, simulated on the training part
of biq2021-train (the held-out part is never read):

    python -m tooling.quality_mos.calibrate_sim [--cache /tmp/quality_mos] [--draws 5] [--sizes 20 60 200]

The served head was trained on every training photo, so its score on them is in-sample; the simulation therefore
fits a stand-in "current head" the way training does (ridge, strength by 5-fold cross-validation) on some training
photos and simulates users on the others:

- `same`: the stand-in is fitted on a random 40 % of the training photos; users rate photos of the other 60 %;
- `shift`: the stand-in is fitted on the stock photos (ss03) alone; users rate camera-gallery and capture-error
  photos (ss01, ss02), which that head ranks worse: the case calibration exists for.

Per draw: the user's photos are drawn at random from the pool, both re-fits (`correction`, `scratch`) run exactly as
`calibrate_mos.refit_score` does, and every head is scored (Spearman vs MOS) on the rest of the pool. Prints a
Markdown table (mean over draws) and, per method, how often the default rule would write and what writing did.
Features: `measure_cached` (`--cache`/originals, shared with `tooling.quality_mos.train`).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tooling.quality.biq import load_biq, source, split
from tooling.quality.real_photos import spearman
from tooling.quality_mos.calibrate_mos import METHODS, refit_score
from tooling.quality_mos.features import measure_cached
from tooling.quality_mos.ridge import RidgeHead, best_alpha, cross_validate, fit_ridge

SHOWN = ("scratch", "correction")  # the table's order: old, new


def stand_in_head(features: np.ndarray, mos: np.ndarray) -> RidgeHead:
    return fit_ridge(features, mos, best_alpha(cross_validate(features, mos)))


def scenario_rows(
    features: np.ndarray, mos: np.ndarray, names: Sequence[str], scenario: str, sizes: Sequence[int], draws: int
) -> list[dict]:
    rng = np.random.default_rng(7)
    if scenario == "same":
        base = rng.permutation(len(mos)) < int(0.4 * len(mos))
    else:
        base = np.array([source(n) == "ss03" for n in names])
    current = stand_in_head(features[base], mos[base])
    pool = np.flatnonzero(~base)
    rows = []
    for size in sizes:
        for draw in range(draws):
            user = np.random.default_rng(1000 * size + draw).permutation(pool)
            rated, rest = user[:size], user[size:]
            row = {"scenario": scenario, "photos": size, "draw": draw}
            row["current"] = spearman(np.clip(current.predict(features[rest]), 0, 1), mos[rest])
            for method in METHODS:
                c = refit_score(features[rated], mos[rated], current, method)
                row[method] = spearman(np.clip(c.head.predict(features[rest]), 0, 1), mos[rest])
                row[f"{method}_reported"] = c.refit
                row[f"{method}_current_reported"] = c.current
                row[f"{method}_written"] = c.better
            rows.append(row)
            print(f"  {scenario} {size} #{draw}: " + ", ".join(f"{k} {row[k]:.3f}" for k in ("current", *METHODS)))
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| users' photos | n | current head | re-fit from scratch (old) | correction (new) | written by default:"
        " scratch / correction | gain when written: scratch / correction |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    keys = sorted({(r["scenario"], r["photos"]) for r in rows}, key=lambda k: (k[0] != "same", k[1]))
    for scenario, size in keys:
        group = [r for r in rows if (r["scenario"], r["photos"]) == (scenario, size)]

        def mean(key: str, group: list[dict] = group) -> str:
            values = [r[key] for r in group]
            return f"{np.mean(values):.3f} ({np.min(values):.2f}-{np.max(values):.2f})"

        written = " / ".join(f"{sum(r[f'{m}_written'] for r in group)} of {len(group)}" for m in SHOWN)
        gains = []
        for m in SHOWN:
            g = [r[m] - r["current"] for r in group if r[f"{m}_written"]]
            gains.append(f"{np.mean(g):+.3f}" if g else "-")
        label = "same as training" if scenario == "same" else "other sources"
        cells = [label, str(size), mean("current"), mean("scratch"), mean("correction"), written, " / ".join(gains)]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tooling.quality_mos.calibrate_sim", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/quality_mos"), help="measurements (originals.*)")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 60, 200])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        train, _ = split(load_biq())  # the held-out part is not even kept
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    measured = measure_cached([p for p, _ in train], args.cache / "originals", args.workers)
    features = np.stack([m.features for m in measured]).astype(np.float64)
    mos = np.array([m for _, m in train])
    names = [p.name for p, _ in train]
    rows = []
    for scenario in ("same", "shift"):
        rows += scenario_rows(features, mos, names, scenario, args.sizes, args.draws)
    print(table(rows))
    for m in METHODS:
        reported, other = np.mean([r[f"{m}_reported"] for r in rows]), np.mean([r[m] for r in rows])
        print(f"{m}: mean reported (nested CV) {reported:.3f}, mean on the other photos {other:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
