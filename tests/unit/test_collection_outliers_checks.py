"""The report's outliers name the resolution classes its `resolutions` section counts (docs/COLLECTIONS.md: "a
resolution class held by <= 1 %"): they used buckets of their own (0.1, 0.5, 1, 2, 5, 10, 20 MP), so a walkthrough's
report flagged "resolution 10-20 MP: 4 of 3,112 images" beside a chart with no such class."""

import json
import re
from html import unescape

import pytest

from pipelines.collections.record import ImageRecord
from pipelines.collections.report import build_report
from pipelines.collections.report_html import render_report_html
from pipelines.collections.summary import RESOLUTION_CLASSES

pytestmark = pytest.mark.unit

RESOLUTION_REASON = re.compile(r"resolution (?P<label>.+?): (?P<count>\d+) of (?P<total>[\d,]+) images")


def _photo(name: str, width: int, height: int) -> ImageRecord:
    return ImageRecord(name=name, format="JPEG", mode="RGB", width=width, height=height)


def _collection() -> list[ImageRecord]:
    """Mostly small web images, a few camera photos (8 MP: the old '5-10 MP') and very large ones (16 MP: the
    old '10-20 MP'), as the walkthrough's collection."""
    records = [_photo(f"web/{i:03d}.jpg", 500, 375) for i in range(600)]
    records += [_photo(f"camera/{i}.jpg", 3264, 2448) for i in range(4)]  # 7.99 MP
    records += [_photo(f"large/{i}.jpg", 4608, 3456) for i in range(2)]  # 15.9 MP
    return records


def test_resolution_outliers_use_the_reports_classes() -> None:
    report = build_report("walk", _collection())
    assert list(report["resolutions"]) == [label for _, label in RESOLUTION_CLASSES]
    reasons = [part for outlier in report["outliers"] for part in outlier["reason"].split("; ")]
    matched = [m for m in map(RESOLUTION_REASON.fullmatch, reasons) if m]
    assert {m["label"] for m in matched} == {"4-12 MP", ">12 MP"}  # were "5-10 MP" and "10-20 MP"
    for m in matched:  # each count is the one the report's chart shows for that class
        assert int(m["count"]) == report["resolutions"][m["label"]] and m["total"] == "606"
    assert {o["name"] for o in report["outliers"]} == {f"camera/{i}.jpg" for i in range(4)} | {
        f"large/{i}.jpg" for i in range(2)
    }


def test_the_report_with_these_outliers_renders_as_json_and_html() -> None:
    report = build_report("walk", _collection())
    assert json.loads(json.dumps(report, ensure_ascii=False))["outliers"] == report["outliers"]
    html = unescape(render_report_html(report))
    assert "resolution &gt;12 MP" not in html  # escaped once, not twice
    assert "resolution >12 MP: 2 of 606 images" in html and "resolution 4-12 MP: 4 of 606 images" in html
