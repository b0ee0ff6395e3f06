"""Insights: which acquisition conditions go with which defects, stated only when the data supports them.

For each quality tag and each factor (camera, ISO, shutter speed, aperture, time of day, month, location cluster)
every group of the factor is compared with the rest of the images whose factor is known: the tag's rate in the
group against its rate in the rest, as a 2x2 table. A finding is reported only when

- both sides have at least `MIN_GROUP` images and the group at least `MIN_TAGGED` tagged ones,
- the group's rate is at least `MIN_RATIO` times the rest's (a defect that goes *with* the condition), and
- the two-sided test (Fisher's exact test for tables up to `EXACT_LIMIT` images, the two-proportion z-test with
  continuity correction above) gives p below `ALPHA` divided by the number of comparisons made (Bonferroni), so a
  collection with no real effect yields, with probability at least 1 - ALPHA, no finding at all.

Findings are ordered by p-value (the strongest evidence first), at most one per (tag, factor). Identical files
(the same sha256) count once: copies are not independent photos.
"""

import math
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.collections.record import ImageRecord
from pipelines.collections.summary import camera_name, month
from pipelines.collections.summary import defect_tags as default_defect_tags

ALPHA = 0.01
MIN_GROUP = 20
MIN_TAGGED = 5
MIN_RATIO = 1.5
EXACT_LIMIT = 2000
MAX_INSIGHTS = 12


@dataclass(frozen=True)
class Factor:
    name: str  # as it reads in a sentence: "camera", "shutter speed", ...
    group_of: Callable[[ImageRecord], str | None]
    phrase: str  # "{group}" placed in the sentence: "photos from {group}", "photos at {group}"


def _iso_group(r: ImageRecord) -> str | None:
    if r.iso is None or r.iso <= 0:  # many cameras write ISO 0 for "not known": no group, as shutter and aperture
        return None
    return (
        "ISO 200 or less"
        if r.iso <= 200
        else "ISO 201-800"
        if r.iso <= 800
        else "ISO 801-3200"
        if r.iso <= 3200
        else "ISO above 3200"
    )


def _shutter_group(r: ImageRecord) -> str | None:
    t = r.exposure_time_s
    if t is None or t <= 0:
        return None
    return (
        "shutter slower than 1/30 s"
        if t > 1 / 30
        else "shutter 1/30-1/250 s"
        if t >= 1 / 250
        else "shutter faster than 1/250 s"
    )


def _aperture_group(r: ImageRecord) -> str | None:
    f = r.f_number
    if f is None or f <= 0:
        return None
    return "f/2.8 or wider" if f <= 2.8 else "f/2.9-f/8" if f <= 8 else "narrower than f/8"


def _hour(r: ImageRecord) -> int | None:
    if not r.taken_at or len(r.taken_at) < 13:
        return None
    try:
        return datetime.fromisoformat(r.taken_at[:19]).hour
    except ValueError:
        return None


def _time_of_day(r: ImageRecord) -> str | None:
    hour = _hour(r)
    if hour is None:
        return None
    return (
        "night (21:00-05:59)"
        if hour >= 21 or hour < 6
        else "morning (06:00-11:59)"
        if hour < 12
        else "afternoon (12:00-16:59)"
        if hour < 17
        else "evening (17:00-20:59)"
    )


def factors(location_of: Callable[[ImageRecord], str | None] = lambda r: None) -> tuple[Factor, ...]:
    return (
        Factor("camera", camera_name, "photos from {group}"),
        Factor("ISO", _iso_group, "photos at {group}"),
        Factor("shutter speed", _shutter_group, "photos with {group}"),
        Factor("aperture", _aperture_group, "photos at {group}"),
        Factor("time of day", _time_of_day, "photos taken at {group}"),
        Factor("month", month, "photos taken in {group}"),
        Factor("location", location_of, "photos taken {group}"),
    )


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_p(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p of Fisher's exact test for [[a, b], [c, d]]: the probability, with the margins fixed, of a
    table no more likely than the one observed."""
    row1, col1, n = a + b, a + c, a + b + c + d
    low, high = max(0, col1 - (n - row1)), min(row1, col1)
    base = _log_comb(n, col1)

    def log_p(x: int) -> float:
        return _log_comb(row1, x) + _log_comb(n - row1, col1 - x) - base

    observed = log_p(a)
    total = sum(math.exp(lp) for x in range(low, high + 1) if (lp := log_p(x)) <= observed + 1e-7)
    return min(1.0, total)


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p of the two-proportion z-test with Yates' continuity correction."""
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    diff = abs(k1 / n1 - k2 / n2) - 0.5 * (1 / n1 + 1 / n2)
    return math.erfc(max(0.0, diff) / se / math.sqrt(2))


def rate_test_p(k1: int, n1: int, k2: int, n2: int) -> float:
    if n1 + n2 <= EXACT_LIMIT:
        return fisher_exact_p(k1, n1 - k1, k2, n2 - k2)
    return two_proportion_p(k1, n1, k2, n2)


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def percent_text(rate: float, decimals: int = 0) -> str:
    """A rate as people read it: `decimals` decimals from 1 % to 99 %, at least one near 0 and 100 %, and never
    "0 %" or "100 %" for a rate that is not exactly that (199 of 200 is "99.5 %"; 9,999 of 10,000 is "> 99.9 %")."""
    if rate in (0, 1):
        return f"{rate * 100:.{decimals}f} %"
    if rate < 0.001:
        return "< 0.1 %"
    if rate > 0.999:
        return "> 99.9 %"
    return f"{rate * 100:.{decimals if 0.01 <= rate <= 0.99 else max(decimals, 1)}f} %"


def find_insights(
    records: Sequence[ImageRecord],
    location_of: Callable[[ImageRecord], str | None] = lambda r: None,
    alpha: float = ALPHA,
    limit: int = MAX_INSIGHTS,
    defect_tags: Collection[str] | None = None,
) -> list[dict[str, Any]]:
    """Defect rates against acquisition conditions, each `{text, evidence}`; see the module docstring.
    `defect_tags`: the tags to test (default: the quality stage's defect tags; positive ones are not defects)."""
    if defect_tags is None:
        defect_tags = default_defect_tags()
    assessed = _distinct([r for r in records if r.ok and r.quality_level is not None])
    tags = sorted({tag for r in assessed for tag in r.tags if tag in defect_tags})
    candidates: list[tuple[float, dict[str, Any]]] = []
    tests = 0
    for factor in factors(location_of):
        groups: dict[str, list[ImageRecord]] = defaultdict(list)
        for record in assessed:
            group = factor.group_of(record)
            if group is not None:
                groups[group].append(record)
        known = sum(len(g) for g in groups.values())
        if len(groups) < 2:
            continue
        for tag in tags:
            tagged_known = sum(1 for g in groups.values() for r in g if tag in r.tags)
            for group, members in groups.items():
                n, rest_n = len(members), known - len(members)
                if n < MIN_GROUP or rest_n < MIN_GROUP:
                    continue
                # With two groups, "A vs the rest" and "B vs the rest" are one table: counted once.
                tests += 1 if len(groups) > 2 or group == min(groups) else 0
                k = sum(1 for r in members if tag in r.tags)
                rest_k = tagged_known - k
                rate, rest_rate = k / n, rest_k / rest_n
                if k < MIN_TAGGED or rate < MIN_RATIO * rest_rate:
                    continue
                p = rate_test_p(k, n, rest_k, rest_n)
                ratio = round(rate / rest_rate, 2) if rest_rate > 0 else None
                evidence = {
                    "tag": tag,
                    "factor": factor.name,
                    "group": group,
                    "rate": round(rate, 4),
                    "n": n,
                    "tagged": k,
                    "rest_rate": round(rest_rate, 4),
                    "rest_n": rest_n,
                    "rest_tagged": rest_k,
                    "ratio": ratio,
                    "p_value": p,
                }
                candidates.append((p, evidence))
    threshold = alpha / max(1, tests)
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for p, evidence in sorted(candidates, key=lambda item: (item[0], -(item[1]["ratio"] or math.inf))):
        key = (evidence["tag"], evidence["factor"])
        if p < threshold and key not in best:
            best[key] = evidence | {"tests": tests, "threshold": threshold}
    return [{"text": _sentence(e, factors_by_name(location_of)), "evidence": e} for e in list(best.values())[:limit]]


def factors_by_name(location_of: Callable[[ImageRecord], str | None]) -> dict[str, Factor]:
    return {f.name: f for f in factors(location_of)}


def _sentence(e: dict[str, Any], by_name: dict[str, Factor]) -> str:
    subject = by_name[e["factor"]].phrase.format(group=e["group"])
    times = f"{e['ratio']:.1f}x as common" if e["ratio"] is not None else "none in the rest"
    return (
        f"{e['tag']}: {percent_text(e['rate'])} of {subject} vs {percent_text(e['rest_rate'])} of the rest ({times}; "
        f"{e['n']:,} vs {e['rest_n']:,} photos, {_p_text(e['p_value'])})"
    )


def _distinct(records: list[ImageRecord]) -> list[ImageRecord]:
    """One record per file content (sha256): the tests assume independent photos, and one blurry photo stored 20
    times made "12.5x as common, p < 0.001" out of one photo's worth of evidence. Records without a hash are kept."""
    seen: set[str] = set()
    out = []
    for record in records:
        if record.sha256 is not None:
            if record.sha256 in seen:
                continue
            seen.add(record.sha256)
        out.append(record)
    return out
