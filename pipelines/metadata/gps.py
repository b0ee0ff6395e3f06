"""The EXIF GPS IFD into `GpsInfo` (signed decimal degrees, metres, ISO 8601 UTC)."""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import ExifTags, Image

from pipelines.metadata import tag_values as tv
from pipelines.metadata.result import GpsInfo

LAT_REF, LAT, LON_REF, LON, ALT_REF, ALT, TIME = 1, 2, 3, 4, 5, 6, 7
DIRECTION_REF, DIRECTION, DATE = 16, 17, 29
_DIRECTION_REFS = {"T": "true", "M": "magnetic"}
_PARTS = ("degrees", "minutes", "seconds")


def _undefined(part: Any) -> bool:
    """A rational 0/0: EXIF's way of leaving a part unset (a camera that writes no seconds)."""
    return getattr(part, "numerator", None) == 0 and getattr(part, "denominator", None) == 0


def _degrees(value: Any) -> tuple[float | None, list[str]]:
    """(degrees, notes) from (d, m, s) rationals; writers also store (d, m) or a single decimal value. Read as
    exiftool's ToDegrees reads them: an undefined (0/0) minutes or seconds part counts as 0, and minutes or seconds
    of 60 or more are summed as they are; each is noted. Undefined degrees, a part n/0 or a negative part: None."""
    items = tuple(value) if isinstance(value, tuple | list) else (value,)
    if not items or len(items) > 3:
        return None, []
    parts, notes = [], []
    for index, item in enumerate(items):
        number = tv.number(item)
        if number is None and index > 0 and _undefined(item):
            number = 0.0
            notes.append(f"{_PARTS[index]} 0/0 (undefined) read as 0")
        if number is None or number < 0:
            return None, []
        if index > 0 and number >= 60:
            notes.append(f"{_PARTS[index]} {number:g} is not below 60; summed as it is (as exiftool does)")
        parts.append(number)
    return sum(part / 60**i for i, part in enumerate(parts)), notes


def _coordinate(
    gps: Mapping[int, Any], tag: int, ref_tag: int, signs: dict[str, int], limit: float, name: str
) -> tuple[float | None, list[str]]:
    """(signed degrees, messages) of one coordinate; the messages say why it is None, or what was read oddly."""
    if tag not in gps:
        return None, []
    magnitude, notes = _degrees(gps[tag])
    if magnitude is None:
        return None, [f"gps.{name}: unreadable value {gps[tag]!r}"]
    messages = [f"gps.{name}: {note}" for note in notes]
    ref = (tv.text(gps.get(ref_tag)) or "").upper()[:1]
    if ref not in signs:
        # Without N/S (E/W) the sign is unknown; exiftool also omits its signed Composite value then.
        return None, [*messages, f"gps.{name}: reference {gps.get(ref_tag)!r} is missing or invalid"]
    if magnitude > limit:
        return None, [*messages, f"gps.{name}: {magnitude} is out of range"]
    return signs[ref] * magnitude, messages


def _altitude(gps: Mapping[int, Any]) -> float | None:
    altitude = tv.number(gps.get(ALT))
    if altitude is None:
        return None
    # GPSAltitudeRef: 0 (the EXIF default when absent) above sea level, 1 below.
    return -altitude if tv.integer(gps.get(ALT_REF)) == 1 else altitude


def _timestamp(gps: Mapping[int, Any]) -> tuple[str | None, str | None]:
    date, time = tv.text(gps.get(DATE)), tv.numbers(gps.get(TIME))
    if date is None or time is None:
        return None, None
    try:
        year, month, day = (int(part) for part in date.replace("-", ":").split(":"))
        hours, minutes, seconds = time if len(time) == 3 else (time + (0.0, 0.0))[:3]
        if not 0 <= seconds < 60:
            raise ValueError(f"seconds {seconds} out of range")
        # milliseconds rounded on the whole time: 59.9996 s is the next minute, not ':591.000'
        stamp = datetime(year, month, day, int(hours), int(minutes), tzinfo=UTC) + timedelta(
            milliseconds=round(seconds * 1000)
        )
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: a year or hour of 2**31
        return None, f"gps.timestamp_utc: invalid {date!r} {time!r}: {exc}"
    iso = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if stamp.microsecond:
        iso += f".{stamp.microsecond // 1000:03d}"
    return iso + "Z", None


def read_gps(image: Image.Image) -> tuple[GpsInfo | None, list[str]]:
    """`GpsInfo` from the GPS IFD; (None, []) when there is none or it is empty."""
    exif = image.getexif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo) if ExifTags.IFD.GPSInfo in exif else {}
    if not gps:
        return None, []
    errors: list[str] = []
    latitude, messages_lat = _coordinate(gps, LAT, LAT_REF, {"N": 1, "S": -1}, 90.0, "latitude_deg")
    longitude, messages_lon = _coordinate(gps, LON, LON_REF, {"E": 1, "W": -1}, 180.0, "longitude_deg")
    timestamp, error_time = _timestamp(gps)
    errors += [*messages_lat, *messages_lon, *([error_time] if error_time else [])]
    direction = tv.number(gps.get(DIRECTION))
    if direction is not None and not 0 <= direction <= 360:
        errors.append(f"gps.img_direction_deg: {direction} is out of range")
        direction = None
    info = GpsInfo(
        latitude_deg=latitude,
        longitude_deg=longitude,
        altitude_m=_altitude(gps),
        timestamp_utc=timestamp,
        img_direction_deg=direction,
        img_direction_ref=_DIRECTION_REFS.get((tv.text(gps.get(DIRECTION_REF)) or "").upper()[:1]),
    )
    if info == GpsInfo():
        return None, errors
    return info, errors
