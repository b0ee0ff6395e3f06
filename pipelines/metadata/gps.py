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
_TIME_PARTS = ("hours", "minutes", "seconds")


def _parts(items: tuple[Any, ...], names: tuple[str, ...]) -> tuple[list[float] | None, list[str]]:
    """(numbers, notes) of a sexagesimal value's parts (degrees or hours, minutes, seconds): an undefined (0/0)
    minutes or seconds part (a camera that writes no seconds) counts as 0, noted. None for an undefined first part,
    a part n/0, text or a negative part."""
    parts, notes = [], []
    for index, item in enumerate(items):
        number = tv.number(item)
        if number is None and index > 0 and tv.undefined(item):
            number = 0.0
            notes.append(f"{names[index]} 0/0 (undefined) read as 0")
        if number is None or number < 0:
            return None, []
        parts.append(number)
    return parts, notes


def _degrees(value: Any) -> tuple[float | None, list[str]]:
    """(degrees, notes) from (d, m, s) rationals; writers also store (d, m) or a single decimal value. An undefined
    (0/0) minutes or seconds part counts as 0 (exiftool 12.57 gives no coordinate then), and minutes or seconds of 60
    or more are summed as they are (as exiftool's ToDegrees does); each is noted. Undefined degrees, a part n/0 or a
    negative part: None."""
    items = tuple(value) if isinstance(value, tuple | list) else (value,)
    if not items or len(items) > 3:
        return None, []
    parts, notes = _parts(items, _PARTS)
    if parts is None:
        return None, []
    for index, part in enumerate(parts[1:], start=1):
        if part >= 60:
            notes.append(f"{_PARTS[index]} {part:g} is not below 60; summed as it is (as exiftool does)")
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


def _time_of_day(value: Any) -> tuple[tuple[float, ...] | None, list[str]]:
    """(hours, minutes, seconds) of GPSTimeStamp and notes; an undefined (0/0) minutes or seconds part counts as 0,
    as exiftool reads 12:30:(0/0) as 12:30:00 (noted). None when a part does not read as a number."""
    items = tuple(value) if isinstance(value, tuple | list) else (value,)
    if not items:
        return None, []
    parts, notes = _parts(items, _TIME_PARTS)
    return (None, []) if parts is None else (tuple(parts), notes)


def _timestamp(gps: Mapping[int, Any]) -> tuple[str | None, list[str]]:
    """(ISO 8601 UTC, messages) from GPSDateStamp + GPSTimeStamp; the messages say why it is None, or what was read
    oddly (undefined parts)."""
    date, raw_time = tv.text(gps.get(DATE)), gps.get(TIME)
    if date is None or raw_time is None:
        return None, []
    time, notes = _time_of_day(raw_time)
    if time is None:
        return None, [f"gps.timestamp_utc: unreadable time {raw_time!r}"]
    messages = [f"gps.timestamp_utc: {note}" for note in notes]
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
        return None, [*messages, f"gps.timestamp_utc: invalid {date!r} {time!r}: {exc}"]
    iso = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if stamp.microsecond:
        iso += f".{stamp.microsecond // 1000:03d}"
    return iso + "Z", messages


def read_gps(image: Image.Image) -> tuple[GpsInfo | None, list[str]]:
    """`GpsInfo` from the GPS IFD; (None, []) when there is none or it is empty."""
    exif = image.getexif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo) if ExifTags.IFD.GPSInfo in exif else {}
    if not gps:
        return None, []
    errors: list[str] = []
    latitude, messages_lat = _coordinate(gps, LAT, LAT_REF, {"N": 1, "S": -1}, 90.0, "latitude_deg")
    longitude, messages_lon = _coordinate(gps, LON, LON_REF, {"E": 1, "W": -1}, 180.0, "longitude_deg")
    timestamp, messages_time = _timestamp(gps)
    errors += [*messages_lat, *messages_lon, *messages_time]
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
