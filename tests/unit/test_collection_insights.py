"""Insights: the significance tests against known values, a planted effect found first, and no finding without one."""

import dataclasses
import json
import random
from pathlib import Path

import pytest

from pipelines.collections.insights import (
    MIN_GROUP,
    find_insights,
    fisher_exact_p,
    percent_text,
    rate_test_p,
    two_proportion_p,
)
from pipelines.collections.record import ImageRecord

CAMERAS = [("Canon", "EOS 80D"), ("NIKON", "D750"), ("SONY", "ILCE-7M3"), ("Blurmatic", "B1")]


def test_fisher_exact_matches_known_values() -> None:
    # Fisher's lady tasting tea, two-sided: 34/70.
    assert fisher_exact_p(3, 1, 1, 3) == pytest.approx(34 / 70)
    # Perfect separation of 10 and 10: 2 / C(20, 10).
    assert fisher_exact_p(10, 0, 0, 10) == pytest.approx(2 / 184756)
    assert fisher_exact_p(5, 5, 5, 5) == pytest.approx(1.0)


def test_z_test_agrees_with_fisher_on_large_tables() -> None:
    exact, approx = fisher_exact_p(60, 140, 40, 160), two_proportion_p(60, 200, 40, 200)
    assert approx == pytest.approx(exact, rel=0.25)
    assert rate_test_p(600, 2000, 400, 2000) < 1e-10  # above EXACT_LIMIT: the z-test, still tiny for a big effect


def _collection(seed: int, blur_rate_of: dict[str, float], per_camera: int = 60) -> list[ImageRecord]:
    rng = random.Random(seed)
    records = []
    for make, model in CAMERAS:
        for i in range(per_camera):
            tags = []
            if rng.random() < blur_rate_of.get(model, 0.1):
                tags.append("blurry")
            if rng.random() < 0.1:
                tags.append("noisy")
            if rng.random() < 0.5:
                tags.append("well_exposed")  # positive: never an insight
            records.append(
                ImageRecord(
                    name=f"{model}/{i}.jpg",
                    make=make,
                    model=model,
                    iso=rng.choice([100, 400, 1600, 6400]),
                    exposure_time_s=rng.choice([1 / 1000, 1 / 125, 1 / 15]),
                    f_number=rng.choice([1.8, 4.0, 11.0]),
                    taken_at=f"2024-0{rng.randint(1, 6)}-1{rng.randint(0, 9)}T{rng.randint(0, 23):02d}:00:00",
                    quality_score=rng.uniform(20, 90),
                    quality_level="HIGH",
                    tags=tuple(tags),
                )
            )
    return records


def test_planted_camera_effect_is_the_top_insight() -> None:
    insights = find_insights(_collection(7, {"B1": 0.9}))
    assert insights, "the planted effect was not found"
    top = insights[0]["evidence"]
    assert (top["tag"], top["factor"], top["group"]) == ("blurry", "camera", "Blurmatic B1")
    assert top["p_value"] < top["threshold"] and top["rate"] > 0.75 and top["rest_rate"] < 0.2
    assert "blurry" in insights[0]["text"] and "Blurmatic B1" in insights[0]["text"] and "p <" in insights[0]["text"]
    assert all(i["evidence"]["tag"] != "well_exposed" for i in insights)


@pytest.mark.parametrize("seed", range(25))
def test_no_planted_effect_no_insight(seed: int) -> None:
    insights = find_insights(_collection(seed, {}))
    assert insights == [], [i["text"] for i in insights]


def test_every_reported_insight_passes_its_test() -> None:
    reported = [i for seed in range(5) for i in find_insights(_collection(seed, {"B1": 0.5, "D750": 0.3}))]
    assert reported
    for insight in reported:
        e = insight["evidence"]
        assert e["p_value"] < e["threshold"] and e["n"] >= MIN_GROUP and e["rest_n"] >= MIN_GROUP


def test_small_groups_are_not_reported() -> None:
    records = _collection(3, {"B1": 1.0}, per_camera=MIN_GROUP - 1)
    assert all(i["evidence"]["group"] != "Blurmatic B1" for i in find_insights(records))


def test_copies_of_one_file_count_once() -> None:
    """One blurry photo stored 20 times from camera B1, beside 180 photos of other cameras: reported as "blurry: 100 %
    of photos from Blurmatic B1 ... p < 0.001" before; one photo's worth of evidence is no finding."""
    import dataclasses

    records = [r for r in _collection(5, {}) if r.model != "B1"]
    copy = next(r for r in _collection(5, {"B1": 1.0}) if r.model == "B1")
    copies = [dataclasses.replace(copy, name=f"B1/copy{i}.jpg", sha256="ab" * 32) for i in range(20)]
    assert all(i["evidence"]["group"] != "Blurmatic B1" for i in find_insights(records + copies))
    distinct = [dataclasses.replace(c, sha256=f"{i:064x}") for i, c in enumerate(copies)]
    assert any(i["evidence"]["group"] == "Blurmatic B1" for i in find_insights(records + distinct))


@pytest.mark.parametrize(
    ("rate", "decimals", "text"),
    [
        (0.996, 0, "99.6 %"),  # was "100 %": 249 of 250 blurry read as all of them
        (0.9996, 1, "> 99.9 %"),  # the HTML report's one decimal rounded it to "100.0%"
        (0.0004, 0, "< 0.1 %"),
        (0.004, 0, "0.4 %"),
        (1.0, 0, "100 %"),
        (0.0, 1, "0.0 %"),
        (0.35, 0, "35 %"),
        (0.35, 1, "35.0 %"),
    ],
)
def test_rates_near_0_and_100_percent_are_not_rounded_to_them(rate: float, decimals: int, text: str) -> None:
    assert percent_text(rate, decimals) == text


def test_iso_zero_is_not_known_not_a_low_iso_group() -> None:
    """Many cameras write ISO 0 for "not known": it made an "ISO 200 or less" group of photos whose ISO is unknown,
    which an insight could then name. Shutter and aperture already treated values <= 0 as not known."""
    from pipelines.collections.insights import _iso_group

    assert _iso_group(ImageRecord("a", iso=0)) is None and _iso_group(ImageRecord("b", iso=-1)) is None
    assert _iso_group(ImageRecord("c", iso=100)) == "ISO 200 or less"


def test_an_operators_own_defect_tag_is_tested_and_shown_per_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thresholds file (IMGSERVE_QUALITY_THRESHOLDS) that adds a defect tag, and turns `noisy` into praise: the
    report's insights and per-camera table read the packaged kinds only, so its own tag was never tested."""
    import yaml

    from pipelines.collections.report import build_report
    from pipelines.quality.thresholds import DEFAULT_THRESHOLDS_PATH

    data = yaml.safe_load(DEFAULT_THRESHOLDS_PATH.read_text())
    data["version"] = 99
    data["tags"]["soft_focus"] = {**data["tags"]["blurry"], "description": "an operator's own defect"}
    data["tags"]["noisy"]["kind"] = "positive"
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("IMGSERVE_QUALITY_THRESHOLDS", str(path))
    records = [
        dataclasses.replace(r, tags=tuple("soft_focus" if t == "blurry" else t for t in r.tags))
        for r in _collection(7, {"B1": 0.9})
    ]
    report = build_report("operator", records)
    tested = {i["evidence"]["tag"] for i in report["insights"]}
    assert "soft_focus" in tested and "noisy" not in tested
    b1 = next(c for c in report["camera_defects"] if c.get("model") == "B1")
    assert "soft_focus" in json.dumps(b1) and "noisy" not in json.dumps(b1)
