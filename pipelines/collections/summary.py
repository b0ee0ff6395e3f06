"""Collection summaries from per-image records: what is in the collection, as counts and distributions.

Every function is pure (records in, JSON-ready values out) so the server, the CLI and the tests share them. Failed
records (the file could not be analysed) count only in `failed`.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pipelines.collections.record import ImageRecord
from pipelines.quality.thresholds import served_thresholds, tag_kinds

# Upper bounds included: a 12 MP camera (4000x3000) is "4-12 MP".
RESOLUTION_CLASSES = ((0.3, "≤0.3 MP"), (1.0, "0.3-1 MP"), (4.0, "1-4 MP"), (12.0, "4-12 MP"), (math.inf, ">12 MP"))
QUALITY_LEVELS = ("LOW", "MEDIUM", "HIGH", "ULTRA")
SCORE_BINS = 10
SQUARE_TOLERANCE = 0.02  # |w/h - 1| within 2 %: square
LOCATION_RADIUS_KM = 25.0  # photos within this distance of a cluster's first photo join it
KM_PER_DEGREE = 111.2  # of latitude, and of longitude at the equator (the mean Earth radius of haversine_km)
WORST_PER_TAG = 6


def resolution_class(record: ImageRecord) -> str | None:
    megapixels = record.megapixels
    if megapixels is None:
        return None
    return next(label for limit, label in RESOLUTION_CLASSES if megapixels <= limit)


def orientation(record: ImageRecord) -> str | None:
    if not record.width or not record.height:
        return None
    ratio = record.width / record.height
    if abs(ratio - 1.0) <= SQUARE_TOLERANCE:
        return "square"
    return "landscape" if ratio > 1 else "portrait"


def camera_name(record: ImageRecord) -> str | None:
    """'Make Model' as the camera is usually called (the model alone when it already starts with the make)."""
    if not record.make and not record.model:
        return None
    make, model = record.make or "", record.model or ""
    if make and model.lower().startswith(make.lower().split()[0]):
        return model
    return f"{make} {model}".strip()


def month(record: ImageRecord) -> str | None:
    """YYYY-MM of the capture time, when the file states a plausible one."""
    if not record.taken_at or len(record.taken_at) < 7:
        return None
    value = record.taken_at[:7]
    return value if value[:4].isdigit() and value[5:7].isdigit() and value[4] == "-" and value[:4] != "0000" else None


def _counts(values: Iterable[str | None]) -> dict[str, int]:
    return dict(Counter(v for v in values if v is not None).most_common())


def _ordered(counts: Counter[str], order: Sequence[str]) -> dict[str, int]:
    return {key: counts.get(key, 0) for key in order}


def cameras(records: Sequence[ImageRecord]) -> list[dict[str, Any]]:
    counts = Counter((r.make, r.model) for r in records if r.make or r.model)
    return [{"make": make, "model": model, "count": n} for (make, model), n in counts.most_common()]


def lenses(records: Sequence[ImageRecord]) -> list[dict[str, Any]]:
    return [
        {"lens": lens, "count": n} for lens, n in Counter(r.lens_model for r in records if r.lens_model).most_common()
    ]


def date_range(records: Sequence[ImageRecord]) -> dict[str, str | None]:
    dates = sorted(r.taken_at for r in records if month(r) is not None)  # type: ignore[type-var]
    return {"first": dates[0] if dates else None, "last": dates[-1] if dates else None}


def per_month(records: Sequence[ImageRecord]) -> list[dict[str, Any]]:
    scores: dict[str, list[float]] = defaultdict(list)
    images: Counter[str] = Counter()
    for record in records:
        key = month(record)
        if key is None:
            continue
        images[key] += 1
        if record.quality_score is not None:
            scores[key].append(record.quality_score)
    return [{"month": key, "images": images[key], "mean_score": _mean(scores[key])} for key in sorted(images)]


def _mean(values: Sequence[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(h)))


def _cell(point: tuple[float, float]) -> tuple[int, int]:
    """The 1-degree grid cell of a point; longitude wrapped into [-180, 180) (180 E is 180 W)."""
    return math.floor(point[0]), (math.floor(point[1]) + 180) % 360 - 180


def _cells_within(point: tuple[float, float], radius_km: float) -> set[tuple[int, int]]:
    """Every grid cell that may hold a point within `radius_km` of `point`: enough cells east and west for the
    narrow longitude degrees near the poles (1 degree is 23 km at 78 N), wrapping across the antimeridian."""
    lat_cells = math.ceil(radius_km / KM_PER_DEGREE)
    farthest = math.radians(min(89.99, abs(point[0]) + lat_cells + 1))  # the cells' latitude nearest a pole
    lon_cells = min(180, math.ceil(radius_km / (KM_PER_DEGREE * math.cos(farthest))))
    row, column = _cell(point)
    return {
        (row + dy, (column + dx + 180) % 360 - 180)
        for dy in range(-lat_cells, lat_cells + 1)
        for dx in range(-lon_cells, lon_cells + 1)
    }


def location_clusters(records: Sequence[ImageRecord], radius_km: float = LOCATION_RADIUS_KM) -> dict[str, int]:
    """Cluster index (0 = the largest) of each geotagged image: leader clustering on a 1-degree grid, so each
    photo is compared with the leaders of the cells within `radius_km` only."""
    leaders: list[tuple[float, float]] = []
    grid: dict[tuple[int, int], list[int]] = defaultdict(list)
    membership: dict[str, int] = {}
    for record in records:
        if record.latitude is None or record.longitude is None:
            continue
        point = (record.latitude, record.longitude)
        near = (
            leader
            for cell in _cells_within(point, radius_km)
            for leader in grid.get(cell, ())
            if haversine_km(leaders[leader], point) <= radius_km
        )
        found = min(near, default=None)  # the first leader made, whatever order the cells come in
        if found is None:
            found = len(leaders)
            leaders.append(point)
            grid[_cell(point)].append(found)
        membership[record.name] = found
    by_size = [leader for leader, _ in Counter(membership.values()).most_common()]
    rank = {leader: i for i, leader in enumerate(by_size)}
    return {name: rank[leader] for name, leader in membership.items()}


def _mean_longitude(longitudes: Sequence[float]) -> float:
    """The circular mean: 179.9 E and 179.9 W average to 180, not to 0 (the other side of the Earth)."""
    radians = [math.radians(lon) for lon in longitudes]
    mean = math.degrees(math.atan2(sum(map(math.sin, radians)), sum(map(math.cos, radians))))
    return 180.0 if round(mean, 4) == -180.0 else mean


def locations(records: Sequence[ImageRecord], clusters: dict[str, int]) -> list[dict[str, Any]]:
    members: dict[int, list[ImageRecord]] = defaultdict(list)
    for record in records:
        if record.name in clusters:
            members[clusters[record.name]].append(record)
    out = []
    for index in sorted(members):
        group = members[index]
        out.append(
            {
                "cluster": index,
                "latitude": round(sum(r.latitude for r in group) / len(group), 4),  # type: ignore[misc]
                "longitude": round(_mean_longitude([r.longitude for r in group]), 4),  # type: ignore[misc]
                "count": len(group),
                "names": [r.name for r in group[:5]],
            }
        )
    return out


def location_label(cluster: dict[str, Any]) -> str:
    lat, lon = cluster["latitude"], cluster["longitude"]
    return f"near {abs(lat):.2f}°{'N' if lat >= 0 else 'S'} {abs(lon):.2f}°{'E' if lon >= 0 else 'W'}"


def dominant_colors(records: Sequence[ImageRecord], limit: int = 12) -> list[dict[str, Any]]:
    """The most common dominant colours, each channel quantised to 8 levels so near shades count together."""
    counts: Counter[str] = Counter()
    for record in records:
        if record.dominant_hex and len(record.dominant_hex) == 7:
            rgb = [int(record.dominant_hex[i : i + 2], 16) for i in (1, 3, 5)]
            counts["#" + "".join(f"{(c // 32) * 32 + 16:02x}" for c in rgb)] += 1
    return [{"hex": hex_, "count": n} for hex_, n in counts.most_common(limit)]


def quality_summary(records: Sequence[ImageRecord]) -> dict[str, Any]:
    scored = [r.quality_score for r in records if r.quality_score is not None]
    histogram = [0] * SCORE_BINS
    for score in scored:
        histogram[min(SCORE_BINS - 1, max(0, int(score // (100 / SCORE_BINS))))] += 1
    width = 100 // SCORE_BINS
    return {
        "levels": _ordered(Counter(r.quality_level for r in records if r.quality_level), QUALITY_LEVELS),
        "tags": _counts(tag for r in records for tag in r.tags),
        "score_histogram": [{"from": i * width, "to": (i + 1) * width, "count": n} for i, n in enumerate(histogram)],
        "mean_score": _mean(scored),
    }


def defect_tags() -> frozenset[str]:
    """The quality stage's defect tags (`sharp`, `well_exposed` are praise, not defects), as the served thresholds
    name them: an operator's file (IMGSERVE_QUALITY_THRESHOLDS) may add defect tags or change a tag's kind (its
    own defect tags were left out of the report's insights and per-camera table)."""
    return frozenset(name for name, kind in tag_kinds(served_thresholds()).items() if kind == "defect")


def camera_defects(records: Sequence[ImageRecord], min_images: int = 5) -> list[dict[str, Any]]:
    """Defect-tag rates per camera (make, model) with at least `min_images` images, most used first."""
    defects = defect_tags()
    groups: dict[tuple[str | None, str | None], list[ImageRecord]] = defaultdict(list)
    for record in records:
        if (record.make or record.model) and record.quality_level is not None:
            groups[(record.make, record.model)].append(record)
    out = []
    for (make, model), group in sorted(groups.items(), key=lambda item: -len(item[1])):
        if len(group) < min_images:
            continue
        tags = Counter(tag for r in group for tag in r.tags if tag in defects)
        rates = {tag: round(n / len(group), 4) for tag, n in sorted(tags.items())}
        out.append({"make": make, "model": model, "images": len(group), "tags": rates})
    return out


def worst_per_tag(records: Sequence[ImageRecord], per_tag: int = WORST_PER_TAG) -> dict[str, list[dict[str, Any]]]:
    by_tag: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        for tag in record.tags:
            by_tag[tag].append(record)
    return {
        tag: [
            {"name": r.name, "score": r.quality_score}
            for r in sorted(group, key=lambda r: (r.quality_score if r.quality_score is not None else 101, r.name))[
                :per_tag
            ]
        ]
        for tag, group in sorted(by_tag.items())
    }


def collection_summary(records: Sequence[ImageRecord], clusters: dict[str, int] | None = None) -> dict[str, Any]:
    """Counts and distributions of the analysed images (the report's descriptive part); `clusters`: the images'
    location clusters when the caller has them already."""
    ok = [r for r in records if r.ok]
    clusters = location_clusters(ok) if clusters is None else clusters
    return {
        "images": len(ok),
        "failed": len(records) - len(ok),
        "formats": _counts(r.format for r in ok),
        "resolutions": _ordered(Counter(resolution_class(r) for r in ok), [label for _, label in RESOLUTION_CLASSES]),
        "orientations": _ordered(Counter(orientation(r) for r in ok), ("landscape", "portrait", "square")),
        "color_modes": _counts(r.mode for r in ok),
        "cameras": cameras(ok),
        "lenses": lenses(ok),
        "date_range": date_range(ok),
        "per_month": per_month(ok),
        "geotagged": sum(1 for r in ok if r.latitude is not None and r.longitude is not None),
        "locations": locations(ok, clusters),
        "dominant_colors": dominant_colors(ok),
        "quality": quality_summary(ok),
        "camera_defects": camera_defects(ok),
        "worst": worst_per_tag(ok),
    }
