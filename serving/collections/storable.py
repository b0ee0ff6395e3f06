"""Values as every job database (SQLite, PostgreSQL), Ray Data's Arrow blocks and strict JSON readers can hold them.

A file name that is not UTF-8 (old cameras, Windows shares, old zips) reaches Python as a str with surrogate escapes
(os.walk, os.listdir), which no UTF-8 column or Arrow string accepts. Its display name is stored with U+FFFD, as tar
names are read (`serving.jobs.archives.TAR_NAMES`); where the file is read from is stored reversibly
(`storable_location`), so the run reads it and a report shows it later. NaN and infinities are not JSON: documents
are stored and answered with None in their place. A capture time is stored in one ISO 8601 form of at most 35
characters (`storable_taken_at`), whatever produced the analysis document.
"""

import math
import os
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

# A capture time as an analysis document may state it: a date, a time of day, sub-seconds, an offset (Z, ±HH, ±HHMM,
# ±HH:MM, or with seconds as Python's isoformat writes them: ±HH:MM:SS[.ffffff])
TAKEN_AT_PATTERN = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})(?:[T ](?P<minute>\d{2}:\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?"
    r"(?P<offset>Z|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?)?)?",
    re.ASCII,
)
MAX_FRACTION_DIGITS = 9  # nanoseconds, as `pipelines.metadata.exif` keeps EXIF sub-seconds
# A local path that is not UTF-8, as its bytes percent-encoded: "fsbytes:///photos/caf%E9.jpg"
RAW_PATH_PREFIX = "fsbytes://"


def storable_text(text: str) -> str:
    """`text` as UTF-8 can hold it: bytes escaped as surrogates (a name that is not UTF-8) become U+FFFD, as
    `bytes.decode("utf-8", "replace")` makes them; any other lone surrogate becomes '?'. Valid text is unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate outside U+DC80..U+DCFF: not an escaped byte
        return text.encode("utf-8", "replace").decode("utf-8")


def storable_location(path: str) -> str:
    """A local path as a location text columns and Arrow hold: itself when it is valid text, else its file-system
    bytes percent-encoded after `RAW_PATH_PREFIX` (read back by `local_path`)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return RAW_PATH_PREFIX + quote_from_bytes(os.fsencode(path), safe="/")


def local_path(location: str) -> str | None:
    """The local path a `storable_location` of a path that is not UTF-8 names; None for any other location."""
    if not location.startswith(RAW_PATH_PREFIX):
        return None
    return os.fsdecode(unquote_to_bytes(location.removeprefix(RAW_PATH_PREFIX)))


def storable_taken_at(value: str | None) -> str | None:
    """A capture time in the one form `collection_images.taken_at` (VARCHAR(40)) holds and its filters compare as
    text: YYYY-MM-DD, or YYYY-MM-DDTHH:MM:SS with sub-seconds cut to 9 digits and an offset as ±HH:MM (Z is +00:00),
    at most 35 characters. An offset that is not whole minutes (not ISO 8601: "+05:30:15") is left out (the camera's
    local time, which the filters compare, stands); a value that is no ISO date is None (the analysis document keeps
    both as read)."""
    match = TAKEN_AT_PATTERN.fullmatch(value.strip()) if value is not None else None
    if match is None:
        return None
    date, minute, second, fraction, offset = match.group("date", "minute", "second", "fraction", "offset")
    text = date if minute is None else f"{date}T{minute}:{second or '00'}"
    try:
        datetime.fromisoformat(text)  # a real day and time of day
    except ValueError:
        return None
    if minute is None:
        return date
    if fraction:
        text += "." + fraction[:MAX_FRACTION_DIGITS]
    return text + _minutes_offset(offset)


def _minutes_offset(offset: str | None) -> str:
    """`offset` as ±HH:MM; "" when there is none, or it is not whole minutes or not a UTC offset at all."""
    if not offset:
        return ""
    if offset == "Z":
        return "+00:00"
    digits = offset[1:].replace(":", "")
    hours, minutes, seconds = digits[:2], digits[2:4] or "00", digits[4:]
    if seconds.strip("0.,") or int(hours) > 23 or int(minutes) > 59:
        return ""
    return f"{offset[0]}{hours}:{minutes}"


def finite_json(value: Any) -> Any:
    """`value` (JSON-ready: dicts, lists, tuples, scalars) with every NaN or infinite float as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value
