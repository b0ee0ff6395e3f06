"""The filters of a collection's image listing and export (`GET /v1/collections/{id}/images`, `.../export`,
`imgserve collection export`): made from their public names (`FILTER_PARAMETERS`), checked when made (a filter that
could only match nothing by mistake is a 400), and turned into SQL clauses on `collection_images`."""

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import sqlalchemy as sa
from PIL import Image

from pipelines.quality.thresholds import LEVELS, served_thresholds, tag_vocabulary
from serving.collections.filter_parameters import FILTER_PARAMETERS
from serving.errors import BadRequestError
from serving.jobs.tables import collection_images

# An ISO 8601 date or date-time prefix, as EXIF dates are stored (2024, 2024-05, 2024-05-01, 2024-05-01T10:00, ...;
# an offset is accepted and dropped: dates are compared as the camera's local time, as text)
TAKEN_PATTERN = re.compile(
    r"(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})([T ](?P<hour>\d{2})(:(?P<minute>\d{2})(:(?P<second>\d{2})"
    r"(\.\d+)?)?)?(?P<offset>Z|[+-](?P<offset_hours>\d{2}):?(?P<offset_minutes>\d{2}))?)?)?)?",
    re.ASCII,  # \d is any Unicode digit otherwise: '２０２４-03-01' passed, compared as text with ASCII dates
)
# The parts of a matched date/time that must be in range (the day: in its month); compared as text, 2022-13-01 was
# "2023 onwards" and 2022-02-30 "March 2022 onwards", without a word.
TAKEN_RANGES = {
    "month": ("month", 1, 12),
    "hour": ("hour", 0, 23),
    "minute": ("minute", 0, 59),
    "second": ("second", 0, 59),
    "offset_hours": ("offset hour", 0, 23),
    "offset_minutes": ("offset minute", 0, 59),
}
FORMAT_ALIASES = {"JPG": "JPEG", "JPE": "JPEG", "JFIF": "JPEG", "TIF": "TIFF", "HEIC": "HEIF", "HIF": "HEIF"}
# Records keep Pillow's format name: a camera JPEG with multi-picture data (many Fujifilm, Nikon, Sony files, gain-map
# JPEGs) is "MPO"; asking for JPEG finds both.
FORMAT_MEMBERS = {"JPEG": ("JPEG", "MPO")}
SCORE_RANGE = (0.0, 100.0)  # quality scores


@cache
def known_tags() -> frozenset[str]:
    """Tag names a filter may ask for: those the server gives with its thresholds (`IMGSERVE_QUALITY_THRESHOLDS`,
    read as serving.placement reads it)."""
    return tag_vocabulary(served_thresholds())


@dataclass(frozen=True)
class ImageFilter:
    """The `/v1/collections/{id}/images` filters; None: not filtered on."""

    tag: str | None = None
    level: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    taken_after: str | None = None
    taken_before: str | None = None
    format: str | None = None
    label: str | None = None
    failed: bool | None = None

    @classmethod
    def from_parameters(cls, values: Mapping[str, Any]) -> "ImageFilter":
        """The filter from values by their public names (`FILTER_PARAMETERS`: query parameters, the CLI's options;
        `file_format` sets `format`); other keys are ignored, None is not filtered on."""
        return cls(**{parameter.field: values.get(parameter.name) for parameter in FILTER_PARAMETERS})

    def __post_init__(self) -> None:
        """Refuse filters that could only match nothing by mistake (a misspelt tag or level, a date in another
        format compared as text): a data team would read the empty answer as "no such images"."""
        if self.tag is not None and self.tag not in known_tags():
            raise BadRequestError(
                f"tag={self.tag[:60]!r} is not a quality tag; known: {', '.join(sorted(known_tags()))}"
            )
        for name in ("camera_make", "camera_model", "label"):
            value = getattr(self, name)
            if value is not None and not value.strip():  # recorded names are never blank (None when not stated)
                raise BadRequestError(f"{name}={value[:60]!r} is blank: leave it out to list every image")
        for name in ("min_score", "max_score"):  # the one check of the bounds: HTTP (its message) and the CLI
            score = getattr(self, name)
            if score is not None and not SCORE_RANGE[0] <= score <= SCORE_RANGE[1]:  # NaN too
                raise BadRequestError(f"{name}={score}: quality scores are {SCORE_RANGE[0]:g} to {SCORE_RANGE[1]:g}")
        if self.level is not None and self.level.upper() not in LEVELS:
            raise BadRequestError(f"level={self.level[:60]!r}: choose one of {', '.join(LEVELS)}")
        for name in ("taken_after", "taken_before"):
            value = getattr(self, name)
            if value is not None:
                match = TAKEN_PATTERN.fullmatch(value)
                impossible = None if match is None else _impossible_part(match)
                if match is None or impossible:
                    reason = f"{impossible}; expected" if impossible else "expected"
                    raise BadRequestError(
                        f"{name}={value[:60]!r}: {reason} an ISO date such as 2024-05-01 or 2024-05-01T10:30"
                    )
                # Stored dates use the T separator. The offset goes: compared as text, 'Z' sorted after every digit
                # (taken_after=...T10Z matched nothing) and '+' before them (an exclusive bound let its own second in).
                local = value[: match.start("offset")] if match.group("offset") else value
                object.__setattr__(self, name, local.replace(" ", "T"))
        if self.format is not None:
            name = FORMAT_ALIASES.get(self.format.upper(), self.format.upper())
            if name not in _pillow_formats():
                raise BadRequestError(
                    f"file_format={self.format[:60]!r} is not an image format (e.g. jpeg or jpg, png, tiff, webp, "
                    "heif, gif, bmp, mpo)"
                )
            object.__setattr__(self, "format", name)

    def clauses(self) -> list[sa.ColumnElement[bool]]:
        c = collection_images.c
        out: list[sa.ColumnElement[bool]] = []
        if self.tag is not None:
            out.append(c.tags.contains(f",{self.tag},", autoescape=True))
        pairs = (  # names are recorded stripped: "Canon " matched nothing
            (c.quality_level, self.level and self.level.upper()),
            (c.make, self.camera_make and self.camera_make.strip()),
            (c.model, self.camera_model and self.camera_model.strip()),
            (c.top_label, self.label and self.label.strip()),
        )
        out += [column == value for column, value in pairs if value is not None]
        if self.format is not None:
            out.append(c.format.in_(FORMAT_MEMBERS.get(self.format, (self.format,))))
        if self.min_score is not None:
            out.append(c.quality_score >= self.min_score)
        if self.max_score is not None:
            out.append(c.quality_score <= self.max_score)
        if self.taken_after is not None:
            out.append(c.taken_at >= self.taken_after)
        if self.taken_before is not None:
            out.append(c.taken_at < self.taken_before)
        if self.failed is not None:
            out.append(c.ok == (not self.failed))
        return out


def _impossible_part(match: re.Match[str]) -> str | None:
    """What of a `TAKEN_PATTERN` match cannot exist (month 13, 30 February, hour 25), None when it is a real date
    and time. Year 0000 stays: EXIF writes it for an unset date."""
    parts = {key: int(text) for key, text in match.groupdict().items() if text and key != "offset"}
    for key, (what, low, high) in TAKEN_RANGES.items():
        if key in parts and not low <= parts[key] <= high:
            return f"{what} {match.group(key)} does not exist ({low:02d} to {high:02d})"
    if "day" in parts:
        year, month = parts["year"], parts["month"]
        days = calendar.mdays[month] + (month == 2 and calendar.isleap(year))
        if not 1 <= parts["day"] <= days:
            return f"day {match.group('day')} does not exist in {match.group('year')}-{match.group('month')}"
    return None


@cache
def _pillow_formats() -> frozenset[str]:
    """Pillow's format names, as records store them (JPEG, PNG, MPO, ...; HEIF and AVIF from their plugins)."""
    Image.init()
    return frozenset(Image.OPEN) | frozenset(Image.SAVE) | {"HEIF", "AVIF"}
