"""Camera EXIF from Pillow's `Image.Exif` (IFD0 + Exif IFD) into `ExifInfo`."""

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from PIL import ExifTags, Image

from pipelines.metadata import tag_values as tv
from pipelines.metadata.result import ExifInfo

# Tag ids (EXIF 2.32). IFD0: 0x01xx; Exif IFD: the rest.
MAKE, MODEL, SOFTWARE = 0x010F, 0x0110, 0x0131
EXPOSURE_TIME, F_NUMBER, EXPOSURE_PROGRAM, ISO = 0x829A, 0x829D, 0x8822, 0x8827
DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL, SUBSEC_TIME_ORIGINAL = 0x9003, 0x9011, 0x9291
EXPOSURE_BIAS, METERING_MODE, FLASH, FOCAL_LENGTH = 0x9204, 0x9207, 0x9209, 0x920A
EXPOSURE_MODE, WHITE_BALANCE, FOCAL_LENGTH_35MM = 0xA402, 0xA403, 0xA405
LENS_MAKE, LENS_MODEL = 0xA433, 0xA434

METERING_MODES = {
    0: "unknown",
    1: "average",
    2: "center_weighted_average",
    3: "spot",
    4: "multi_spot",
    5: "pattern",
    6: "partial",
    255: "other",
}
EXPOSURE_PROGRAMS = {
    0: "not_defined",
    1: "manual",
    2: "normal",
    3: "aperture_priority",
    4: "shutter_priority",
    5: "creative",
    6: "action",
    7: "portrait",
    8: "landscape",
}
EXPOSURE_MODES = {0: "auto", 1: "manual", 2: "auto_bracket"}
WHITE_BALANCES = {0: "auto", 1: "manual"}

_DATETIME = re.compile(r"^(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^[+-](\d{2}):(\d{2})$")
MAX_SUBSEC_DIGITS = 9  # nanoseconds: no camera writes more; the string stays within collection_images.taken_at


def exif_datetime(value: Any, subsec: Any = None, offset: Any = None) -> tuple[str | None, str | None]:
    """(ISO 8601 string, error) from an EXIF 'YYYY:MM:DD HH:MM:SS' plus optional sub-seconds and offset; the error
    says why the date-time is None, or which part of it was left out (sub-seconds of more than 9 digits)."""
    raw = tv.text(value)
    if raw is None or not raw.strip("0: -"):
        return None, None  # absent, or the EXIF spelling of "unknown" (blanks / zeros)
    match = _DATETIME.match(raw)
    if match is None:
        return None, f"not an EXIF date-time: {raw!r}"
    try:
        stamp = datetime(*(int(part) for part in match.groups()))  # type: ignore[misc]
    except ValueError as exc:
        return None, f"invalid date-time {raw!r}: {exc}"
    result = stamp.isoformat()
    fraction, error = tv.text(subsec), None
    if fraction is not None and fraction.isascii() and fraction.isdigit():  # not '²' (a Latin-1 byte 0xB2)
        if len(fraction) <= MAX_SUBSEC_DIGITS:
            result += f".{fraction}"
        else:
            error = f"sub-seconds of {len(fraction)} digits (more than {MAX_SUBSEC_DIGITS}) left out"
    zone = tv.text(offset)
    if zone is not None:
        if _valid_offset(zone):
            result += zone
        else:  # as the XMP reader refuses one: '+25:99' is no ISO 8601 offset
            error = "; ".join(filter(None, (error, f"offset {zone[:20]!r} is not a UTC offset (±HH:MM); left out")))
    return result, error


def _valid_offset(zone: str) -> bool:
    """Whether `zone` is an ISO 8601 UTC offset ±HH:MM that Python's datetime takes (under 24 hours, minutes under
    60), as the XMP reader's `datetime.fromisoformat` checks its offsets."""
    match = _OFFSET.match(zone)
    return match is not None and int(match.group(1)) < 24 and int(match.group(2)) < 60


def read_exif(image: Image.Image) -> tuple[ExifInfo | None, list[str]]:
    """`ExifInfo` from the image's EXIF block; (None, []) when it has none."""
    exif = image.getexif()
    sub: Mapping[int, Any] = exif.get_ifd(ExifTags.IFD.Exif) if ExifTags.IFD.Exif in exif else {}
    if not sub and not any(tag in exif for tag in (MAKE, MODEL, SOFTWARE)):
        return None, []
    errors: list[str] = []

    def get(tag: int) -> Any:
        # Some writers put Exif-IFD tags in IFD0; exiftool reads them there too.
        return sub[tag] if tag in sub else exif.get(tag)

    def enum(field: str, tag: int, names: Mapping[int, str]) -> str | None:
        name, error = tv.enum_name(get(tag), names)
        if error:
            errors.append(f"exif.{field}: {error}")
        return name

    def number(field: str, tag: int) -> float | None:
        value = get(tag)
        result = tv.number(value)
        if result is None and value is not None and not tv.undefined(tv.first(value)):  # 0/0: EXIF's "unknown"
            errors.append(f"exif.{field}: {tv.shown(value)[:60]} is not a finite number")
        return result

    taken, error = exif_datetime(get(DATETIME_ORIGINAL), get(SUBSEC_TIME_ORIGINAL), get(OFFSET_TIME_ORIGINAL))
    if error:
        errors.append(f"exif.datetime_original: {error}")
    flash = tv.integer(get(FLASH))
    info = ExifInfo(
        make=tv.text(get(MAKE)),
        model=tv.text(get(MODEL)),
        lens_make=tv.text(get(LENS_MAKE)),
        lens_model=tv.text(get(LENS_MODEL)),
        software=tv.text(get(SOFTWARE)),
        datetime_original=taken,
        exposure_time_s=number("exposure_time_s", EXPOSURE_TIME),
        f_number=number("f_number", F_NUMBER),
        iso=tv.integer(get(ISO)),
        focal_length_mm=number("focal_length_mm", FOCAL_LENGTH),
        focal_length_35mm_equiv_mm=tv.integer(get(FOCAL_LENGTH_35MM)) or None,  # 0 means "unknown" in EXIF
        flash=flash,
        flash_fired=None if flash is None else bool(flash & 1),
        white_balance=enum("white_balance", WHITE_BALANCE, WHITE_BALANCES),
        metering_mode=enum("metering_mode", METERING_MODE, METERING_MODES),
        exposure_program=enum("exposure_program", EXPOSURE_PROGRAM, EXPOSURE_PROGRAMS),
        exposure_mode=enum("exposure_mode", EXPOSURE_MODE, EXPOSURE_MODES),
        exposure_bias_ev=number("exposure_bias_ev", EXPOSURE_BIAS),
    )
    return info, errors
