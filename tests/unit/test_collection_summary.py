"""Collection summaries from records: counts, categories, dates, locations, quality distribution, the report."""

import pytest

from pipelines.collections.record import ImageRecord, failed_record, record_from_document
from pipelines.collections.report import build_report, report_image_names
from pipelines.collections.summary import collection_summary, location_clusters, locations


def _records() -> list[ImageRecord]:
    return [
        ImageRecord("a.jpg", format="JPEG", width=4000, height=3000, mode="RGB", make="Canon", model="EOS 80D",
                    taken_at="2023-04-01T10:00:00", latitude=48.8566, longitude=2.3522, quality_score=81.0,
                    quality_level="HIGH", tags=("sharp",), dominant_hex="#102030", sha256="1" * 64, phash="0" * 16),
        ImageRecord("b.jpg", format="JPEG", width=3000, height=4000, mode="RGB", make="Canon", model="EOS 80D",
                    taken_at="2023-04-20T22:00:00", latitude=48.86, longitude=2.34, quality_score=25.0,
                    quality_level="LOW", tags=("blurry", "low_light"), sha256="1" * 64, phash="0" * 16),
        ImageRecord("c.png", format="PNG", width=500, height=500, mode="RGBA", taken_at="0000:00:00 00:00:00",
                    latitude=40.4168, longitude=-3.7038, quality_score=55.0, quality_level="MEDIUM", tags=("blurry",)),
        ImageRecord("d.heic", format="HEIF", width=200, height=100, mode="RGB", make="Apple", model="iPhone 13",
                    taken_at="2022-12-31T23:59:59", quality_score=99.5, quality_level="ULTRA"),
        failed_record("e.jpg", "truncated"),
    ]  # fmt: skip


def test_counts_and_categories() -> None:
    summary = collection_summary(_records())
    assert summary["images"] == 4 and summary["failed"] == 1
    assert summary["formats"] == {"JPEG": 2, "PNG": 1, "HEIF": 1}
    assert summary["resolutions"] == {"≤0.3 MP": 2, "0.3-1 MP": 0, "1-4 MP": 0, "4-12 MP": 2, ">12 MP": 0}
    assert summary["orientations"] == {"landscape": 2, "portrait": 1, "square": 1}
    assert summary["color_modes"] == {"RGB": 3, "RGBA": 1}
    assert summary["cameras"] == [
        {"make": "Canon", "model": "EOS 80D", "count": 2},
        {"make": "Apple", "model": "iPhone 13", "count": 1},
    ]
    assert summary["date_range"] == {"first": "2022-12-31T23:59:59", "last": "2023-04-20T22:00:00"}  # 0000 ignored
    assert [m["month"] for m in summary["per_month"]] == ["2022-12", "2023-04"]
    assert summary["per_month"][1] == {"month": "2023-04", "images": 2, "mean_score": 53.0}
    assert summary["geotagged"] == 3


def test_quality_distribution() -> None:
    quality = collection_summary(_records())["quality"]
    assert quality["levels"] == {"LOW": 1, "MEDIUM": 1, "HIGH": 1, "ULTRA": 1}
    assert quality["tags"] == {"blurry": 2, "sharp": 1, "low_light": 1}
    assert sum(b["count"] for b in quality["score_histogram"]) == 4
    assert quality["score_histogram"][9]["count"] == 1  # 99.5 in the last bin
    assert quality["mean_score"] == 65.12


def test_location_clusters_join_nearby_photos_only() -> None:
    clusters = location_clusters(_records())
    assert clusters["a.jpg"] == clusters["b.jpg"] == 0  # Paris, 1 km apart
    assert clusters["c.png"] == 1  # Madrid
    summary = collection_summary(_records())
    assert [(c["count"], round(c["latitude"])) for c in summary["locations"]] == [(2, 49), (1, 40)]


def test_report_keys_and_shown_images() -> None:
    report = build_report("demo", _records())
    for key in ("images", "formats", "resolutions", "cameras", "date_range", "geotagged", "quality", "duplicates",
                "outliers", "insights", "exact_duplicates", "worst"):  # fmt: skip
        assert key in report
    assert report["exact_duplicates"] == [["a.jpg", "b.jpg"]]
    assert ["a.jpg", "b.jpg"] in report["duplicates"]
    assert set(report_image_names(report)) >= {"a.jpg", "b.jpg", "c.png"}


def test_record_from_an_analysis_document() -> None:
    document = {
        "classification": {"predictions": [{"label": "tench", "index": 1, "score": 0.9}]},
        "quality": {"score": 70.0, "level": "HIGH", "tags": [{"name": "noisy"}, {"name": "sharp"}]},
        "metadata": {
            "file": {"size_bytes": 10, "sha256": "ab", "format": "JPEG", "phash": "00ff00ff00ff00ff"},
            "image": {"upright_width": 30, "upright_height": 20, "mode": "RGB"},
            "exif": {"make": "Canon\x00 ", "model": " EOS 80D", "iso": 800, "datetime_original": "2023-01-02T03:04:05"},
            "gps": {"latitude_deg": 1.5, "longitude_deg": -2.5},
        },
    }
    record = record_from_document("x.jpg", document, ((1, 0.9),))
    assert (record.make, record.model, record.iso, record.width, record.height) == ("Canon", "EOS 80D", 800, 30, 20)
    assert record.tags == ("noisy", "sharp") and record.top_label == "tench" and record.class_probs == ((1, 0.9),)
    assert (record.latitude, record.longitude, record.phash) == (1.5, -2.5, "00ff00ff00ff00ff")


def _geotagged(*points: tuple[float, float]) -> list[ImageRecord]:
    return [ImageRecord(f"{i}.jpg", latitude=lat, longitude=lon) for i, (lat, lon) in enumerate(points)]


def test_location_clusters_join_across_the_antimeridian() -> None:
    # Taveuni, Fiji: 11 km apart on either side of 180 degrees were two clusters, the one "near 0.00 E" (Africa)
    records = _geotagged((-16.8, 179.95), (-16.8, -179.95), (-16.81, 179.99))
    clusters = location_clusters(records)
    assert len(set(clusters.values())) == 1
    (summary,) = locations(records, clusters)
    assert abs(summary["longitude"]) > 179.9 and summary["latitude"] == pytest.approx(-16.8033, abs=1e-3)


def test_location_clusters_near_the_poles_look_far_enough_east_and_west() -> None:
    # Svalbard, 78.2 N: a degree of longitude is 23 km there, so photos 23 km apart can be two grid cells apart
    records = _geotagged((78.2, 15.99), (78.2, 17.01))
    assert len(set(location_clusters(records).values())) == 1
    # and photos farther apart than the radius stay apart, also across the antimeridian
    far = _geotagged((0.0, 179.9), (0.0, -179.7))  # 44 km
    assert len(set(location_clusters(far).values())) == 2
