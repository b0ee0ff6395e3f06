"""One image of a collection as the collection functions see it: a flat record built from the analysis document.

The document is what `/v1/analyze` answers for the image (`classification`, `quality`, `metadata`); the record keeps
the facts that summaries, duplicates, outliers and insights use, with `None` for what the file or a skipped stage
does not say. `class_probs` is the classifier's sparse output (the highest probabilities as `(class index, p)`), the
feature space outliers are measured in.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageRecord:
    name: str
    ok: bool = True  # False: the image could not be analysed (`error` says why); only `name` and `error` are set
    error: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    phash: str | None = None  # 16 hex digits (pipelines.metadata.phash)
    format: str | None = None  # JPEG, PNG, ...
    width: int | None = None  # upright (as displayed)
    height: int | None = None
    mode: str | None = None  # RGB, RGBA, L, CMYK, ...
    make: str | None = None
    model: str | None = None
    lens_model: str | None = None
    taken_at: str | None = None  # EXIF DateTimeOriginal, ISO 8601 local time
    iso: int | None = None
    exposure_time_s: float | None = None
    f_number: float | None = None
    focal_length_mm: float | None = None
    latitude: float | None = None
    longitude: float | None = None
    dominant_hex: str | None = None
    quality_score: float | None = None  # 0..100
    quality_level: str | None = None  # LOW, MEDIUM, HIGH, ULTRA
    tags: tuple[str, ...] = ()
    top_label: str | None = None
    top_score: float | None = None
    class_probs: tuple[tuple[int, float], ...] = field(default=(), repr=False)

    @property
    def megapixels(self) -> float | None:
        return self.width * self.height / 1e6 if self.width and self.height else None


def _get(document: dict[str, Any], *path: str) -> Any:
    value: Any = document
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().strip("\x00").strip()
    return text or None


def record_from_document(
    name: str, document: dict[str, Any], class_probs: tuple[tuple[int, float], ...] = ()
) -> ImageRecord:
    """The record of one analysed image from its analysis document."""
    meta = document.get("metadata") or {}
    image = _get(meta, "image") or {}
    exif = _get(meta, "exif") or {}
    gps = _get(meta, "gps") or {}
    quality = document.get("quality") or {}
    predictions = _get(document, "classification", "predictions") or []
    top = predictions[0] if predictions else {}
    return ImageRecord(
        name=name,
        size_bytes=_get(meta, "file", "size_bytes"),
        sha256=_get(meta, "file", "sha256"),
        phash=_get(meta, "file", "phash"),
        format=_get(meta, "file", "format"),
        width=image.get("upright_width"),
        height=image.get("upright_height"),
        mode=image.get("mode"),
        make=_text(exif.get("make")),
        model=_text(exif.get("model")),
        lens_model=_text(exif.get("lens_model")),
        taken_at=_text(exif.get("datetime_original")),
        iso=exif.get("iso"),
        exposure_time_s=exif.get("exposure_time_s"),
        f_number=exif.get("f_number"),
        focal_length_mm=exif.get("focal_length_mm"),
        latitude=gps.get("latitude_deg"),
        longitude=gps.get("longitude_deg"),
        dominant_hex=_get(meta, "colors", "dominant", "hex"),
        quality_score=quality.get("score"),
        quality_level=quality.get("level"),
        tags=tuple(tag["name"] for tag in quality.get("tags") or () if isinstance(tag, dict) and "name" in tag),
        top_label=top.get("label"),
        top_score=top.get("score"),
        class_probs=tuple((int(i), float(p)) for i, p in class_probs),
    )


def failed_record(name: str, error: str) -> ImageRecord:
    return ImageRecord(name=name, ok=False, error=error)
