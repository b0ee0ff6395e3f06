"""A realistic collection report (report.py's schema) and thumbnails, shared by the HTML report's unit and browser
tests. Some names are hostile (`<script>`, `&`, quotes) to prove that the page escapes them."""

import base64
import io
from typing import Any

from PIL import Image

EVIL_NAME = '<script>alert("x")</script>.jpg'
AMP_NAME = 'R&D team\'s "best".jpg'
EVIL_CAMERA = "<script>document.title='pwned'</script>"
# One chart per: levels, tags, histogram, timeline, cameras, lenses, formats, resolutions, orientations, colour
# modes, locations.
EXPECTED_SVGS = 11
NO_THUMBNAIL = "IMG_0009.jpg"  # in a duplicate group, deliberately without a thumbnail


def report() -> dict[str, Any]:
    months = [f"2021-{m:02d}" for m in range(1, 13)] + [f"2022-{m:02d}" for m in range(1, 7)]
    per_month = [
        {"month": m, "images": 3 + (i * 7) % 11, "mean_score": None if i == 5 else round(40 + (i * 13) % 45, 1)}
        for i, m in enumerate(months)
    ]
    lenses = [{"lens": f"Lens {i} 24-70mm f/2.8 with a long marketing name", "count": 30 - i} for i in range(25)]
    return {
        "name": "Holiday & <b>family</b> photos",
        "generated_at": "2024-05-01T12:00:00+00:00",
        "images": 120,
        "failed": 3,
        "formats": {"JPEG": 100, "PNG": 12, "HEIF": 6, "TIFF": 2},
        "resolutions": {"<0.3 MP": 2, "0.3-1 MP": 8, "1-4 MP": 30, "4-12 MP": 60, ">12 MP": 20},
        "orientations": {"landscape": 80, "portrait": 36, "square": 4},
        "color_modes": {"RGB": 110, "L": 6, "RGBA": 4},
        "cameras": [
            {"make": "Canon", "model": "Canon EOS 5D Mark IV", "count": 60},
            {"make": "Apple", "model": "iPhone 12", "count": 40},
            {"make": EVIL_CAMERA, "model": None, "count": 12},
            {"make": None, "model": "DMC-FZ200", "count": 8},
        ],
        "lenses": lenses,
        "date_range": {"first": "2021-01-03T09:12:00", "last": "2022-06-28T18:40:00"},
        "per_month": per_month,
        "geotagged": 90,
        "locations": [
            {"cluster": 0, "latitude": 48.8566, "longitude": 2.3522, "count": 50, "names": ["IMG_0001.jpg", AMP_NAME]},
            {"cluster": 1, "latitude": 40.7128, "longitude": -74.006, "count": 25, "names": ["IMG_0100.jpg"]},
            {"cluster": 2, "latitude": -33.8688, "longitude": 151.2093, "count": 10, "names": [EVIL_NAME]},
            {"cluster": 3, "latitude": 35.6762, "longitude": 139.6503, "count": 5, "names": ["IMG_0200.jpg"]},
        ],
        "dominant_colors": [
            {"hex": "#305070", "count": 40},
            {"hex": "#d0b090", "count": 25},
            {"hex": "#f0f0f0", "count": 9},
        ],
        "quality": {
            "levels": {"LOW": 20, "MEDIUM": 50, "HIGH": 40, "ULTRA": 10},
            "tags": {"blurry": 25, "noisy": 18, "underexposed": 9, "overexposed": 4},
            "score_histogram": [
                {"from": i * 10, "to": (i + 1) * 10, "count": c}
                for i, c in enumerate([1, 3, 6, 10, 15, 22, 28, 20, 10, 5])
            ],
            "mean_score": 58.4,
        },
        "camera_defects": [
            {"make": "Canon", "model": "Canon EOS 5D Mark IV", "images": 60, "tags": {"blurry": 0.1, "noisy": 0.05}},
            {"make": "Apple", "model": "iPhone 12", "images": 40, "tags": {"blurry": 0.35, "underexposed": 0.2}},
            {"make": EVIL_CAMERA, "model": None, "images": 12, "tags": {"noisy": 0.75}},
        ],
        "duplicates": [["IMG_0001.jpg", "IMG_0002.jpg", AMP_NAME], [EVIL_NAME, NO_THUMBNAIL]],
        "exact_duplicates": [["IMG_0001.jpg", "IMG_0002.jpg"]],
        "outliers": [
            {"name": "IMG_0300.png", "reason": "unusual content for this collection", "score": 0.93},
            {"name": EVIL_NAME, "reason": "very dark <img src=x onerror=alert(1)>", "score": 0.88},
        ],
        "worst": {
            "blurry": [{"name": "IMG_0042.jpg", "score": 12.5}, {"name": AMP_NAME, "score": 20.0}],
            "noisy": [{"name": EVIL_NAME, "score": None}],
            "overexposed": [],
        },
        "insights": [
            {
                "text": "Blurry photos are 3.5× as common with the iPhone 12 (35% of 40) as with other cameras (10%).",
                "evidence": {
                    "tag": "blurry",
                    "factor": "camera",
                    "group": "Apple iPhone 12",
                    "rate": 0.35,
                    "n": 40,
                    "rest_rate": 0.1,
                    "rest_n": 80,
                    "ratio": 3.5,
                    "p_value": 0.0012,
                },
            },
            {
                "text": f"Noisy photos cluster on {EVIL_CAMERA} at ISO 3200+.",
                "evidence": {
                    "tag": "noisy",
                    "factor": "iso",
                    "group": "3200+",
                    "rate": 0.75,
                    "n": 12,
                    "rest_rate": 0.0,
                    "rest_n": 108,
                    "ratio": None,
                    "p_value": 3.1e-9,
                },
            },
        ],
    }


def empty_report() -> dict[str, Any]:
    """No image could be analysed: every count zero, every list and dict empty, every optional value None."""
    return {
        "name": "",
        "generated_at": "2024-05-01T12:00:00+00:00",
        "images": 0,
        "failed": 0,
        "formats": {},
        "resolutions": {"<0.3 MP": 0, "0.3-1 MP": 0, "1-4 MP": 0, "4-12 MP": 0, ">12 MP": 0},
        "orientations": {},
        "color_modes": {},
        "cameras": [],
        "lenses": [],
        "date_range": {"first": None, "last": None},
        "per_month": [],
        "geotagged": 0,
        "locations": [],
        "dominant_colors": [],
        "quality": {"levels": {}, "tags": {}, "score_histogram": [], "mean_score": None},
        "camera_defects": [],
        "duplicates": [],
        "exact_duplicates": [],
        "outliers": [],
        "worst": {},
        "insights": [],
    }


def thumbnail(seed: int) -> str:
    """A small real JPEG as a data URI (a colour gradient), so that the browser test can see it decode."""
    image = Image.new("RGB", (64, 48))
    image.putdata([((x * 4 + seed * 40) % 256, (y * 5) % 256, (seed * 70) % 256) for y in range(48) for x in range(64)])
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails() -> dict[str, str]:
    """Every image the fixture report shows, except NO_THUMBNAIL."""
    data = report()
    names = [n for group in data["duplicates"] for n in group]
    names += [item["name"] for items in data["worst"].values() for item in items]
    names += [item["name"] for item in data["outliers"]]
    return {name: thumbnail(i) for i, name in enumerate(dict.fromkeys(names)) if name != NO_THUMBNAIL}
