"""The last step of `extract_metadata`: values every consumer of the metadata can hold and show safely.

Each block reader already refuses what it cannot read; this pass holds the rules for the whole result, whatever
block a value came from (EXIF, maker notes, legacy APP blocks, XMP, IPTC, the ICC profile):

- no NaN or infinity anywhere (JSON has none: a strict reader, the HTTP answer and PostgreSQL's JSONB refuse them);
- an ISO within `ISO_RANGE` (a hostile 1e30 or 4e9 does not fit the collections' INTEGER column);
- date-time strings of at most `MAX_DATETIME_CHARS` (the collections' `taken_at` column is VARCHAR(40));
- text without C0/C1 control characters other than tab, line feed and carriage return (an ESC or BEL in a camera's
  Make would run terminal escape sequences where it is printed).

A value dropped here is None (an empty string leaves a tuple) with a message in `errors`; the rest is kept.
"""

import dataclasses
import math
import re
from typing import Any

from pipelines.metadata.result import ImageMetadata

ISO_RANGE = (0, 10_000_000)  # 0 as files state it (exiftool too); the highest cameras offer is ~4.5 million
MAX_DATETIME_CHARS = 35  # YYYY-MM-DDTHH:MM:SS + .nnnnnnnnn + ±HH:MM
DATETIME_FIELDS = frozenset({"exif.datetime_original", "xmp.datetime_original", "gps.timestamp_utc"})
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0, DEL, C1; not \t \n \r


def printable(text: str) -> str:
    """`text` without C0/C1 control characters (tab, line feed and carriage return are kept)."""
    return _CONTROL.sub("", text)


def plausible_metadata(metadata: ImageMetadata) -> ImageMetadata:
    """`metadata` with non-finite numbers, implausible ISOs, overlong date-times and control characters removed;
    each removal but control characters is explained in `errors`."""
    errors = [printable(error) for error in metadata.errors]
    sections = {
        field.name: _checked(value, field.name, errors)
        for field in dataclasses.fields(metadata)
        if field.name != "errors" and (value := getattr(metadata, field.name)) is not None
    }
    exif = sections.get("exif")
    if exif is not None and exif.iso is not None and not ISO_RANGE[0] <= exif.iso <= ISO_RANGE[1]:
        errors.append(f"exif.iso: {exif.iso:.6g} is outside {ISO_RANGE[0]}..{ISO_RANGE[1]}; dropped")
        sources = {name: source for name, source in exif.sources.items() if name != "iso"}
        sections["exif"] = dataclasses.replace(exif, iso=None, sources=sources)
    return dataclasses.replace(metadata, **sections, errors=tuple(errors))


def _checked(value: Any, path: str, errors: list[str]) -> Any:
    if isinstance(value, str):
        text = printable(value)
        if path in DATETIME_FIELDS and len(text) > MAX_DATETIME_CHARS:
            errors.append(f"{path}: {text[:60]!r} is longer than {MAX_DATETIME_CHARS} characters; dropped")
            return None
        return text if text or not value else None  # only control characters: nothing said
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{path}: {value} is not a finite number; dropped")
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: _checked(getattr(value, field.name), f"{path}.{field.name}", errors)
            for field in dataclasses.fields(value)
        }
        return dataclasses.replace(value, **changes)
    if isinstance(value, tuple):
        items = [_checked(item, path, errors) for item in value]
        return tuple(
            item for item, was in zip(items, value, strict=True) if item is not None or not isinstance(was, str)
        )
    if isinstance(value, dict):
        return {key: _checked(item, f"{path}.{key}", errors) for key, item in value.items()}
    return value
