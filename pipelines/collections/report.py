"""The collection report as one JSON document: the summary, duplicates, outliers and insights of the records.

The keys are stable (docs/COLLECTIONS.md): `images`, `failed`, `formats`, `resolutions`, `orientations`,
`color_modes`, `cameras`, `lenses`, `date_range`, `per_month`, `geotagged`, `locations`, `dominant_colors`,
`quality`, `camera_defects`, `worst`, `duplicates`, `exact_duplicates`, `outliers`, `insights`, plus `name` and
`generated_at`. `render_report_html` (report_html.py) draws the same document.
"""

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from pipelines.collections.duplicates import exact_duplicate_groups, near_duplicate_groups
from pipelines.collections.insights import find_insights
from pipelines.collections.outliers import find_outliers
from pipelines.collections.record import ImageRecord
from pipelines.collections.report_html import MAX_DUPLICATE_GROUPS, THUMBNAILS_PER_GROUP
from pipelines.collections.summary import collection_summary, location_clusters, location_label


def build_report(name: str, records: Sequence[ImageRecord], generated_at: datetime | None = None) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    clusters = location_clusters(ok)
    summary = collection_summary(records, clusters)
    labels = {c["cluster"]: location_label(c) for c in summary["locations"]}

    def location_of(record: ImageRecord) -> str | None:
        cluster = clusters.get(record.name)
        return labels[cluster] if cluster is not None else None

    return {
        "name": name,
        "generated_at": (generated_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        **summary,
        "duplicates": near_duplicate_groups(ok),
        "exact_duplicates": exact_duplicate_groups(ok),
        "outliers": [asdict(o) for o in find_outliers(ok)],
        "insights": find_insights(ok, location_of),
    }


def report_image_names(report: dict[str, Any]) -> list[str]:
    """The images the report shows as thumbnails (duplicate groups, worst per tag, outliers), each once."""
    names = [n for group in report["duplicates"][:MAX_DUPLICATE_GROUPS] for n in group[:THUMBNAILS_PER_GROUP]]
    names += [item["name"] for items in report["worst"].values() for item in items]
    names += [item["name"] for item in report["outliers"]]
    return list(dict.fromkeys(names))
