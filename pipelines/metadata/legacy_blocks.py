"""Camera facts from the pre-EXIF blocks some early digital cameras wrote into JPEG application segments.

- **Canon CIFF** in APP0 ("II\\x1a\\0\\0\\0HEAPJPGM", e.g. PowerShot A5/A50/Pro70): the heap format of CRW
  files. Make/model, capture time and focal length.
- **Olympus "[picture info]"** in APP12 (e.g. D-320L, C-820L): `Key=Value` text lines. Capture time,
  shutter and aperture.

Read the way ExifTool reads them (Image::ExifTool::CanonRaw, ::APP12), so the values agree with what
`exiftool -n` prints: capture times are Unix seconds written as local wall time, hence taken as UTC fields.
Every offset is bounds-checked and the walk is depth- and count-limited; hostile bytes yield no facts.
"""

import math
import re
import struct
from datetime import UTC, datetime
from typing import Any

CIFF_SIGNATURE = b"HEAPJPGM"
MAX_CIFF_DEPTH = 6
MAX_CIFF_ENTRIES = 512
# Tag ids without the storage bits (0xC000): FocalLength is 0x5029 in ExifTool's table, stored in its record.
CIFF_MAKE_MODEL, CIFF_TIME_STAMP, CIFF_FOCAL_LENGTH = 0x080A, 0x180E, 0x1029
CIFF_SUBDIRECTORY_TYPES = (0x2800, 0x3000)

Facts = dict[str, Any]  # ExifInfo field name -> value


def _unix_time(seconds: int) -> str | None:
    if not 0 < seconds < 2**32:
        return None
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat()


def _ciff_records(heap: bytes, endian: str, depth: int, found: dict[int, bytes]) -> None:
    """Collect the first value of every CIFF tag in `heap` and its subdirectories into `found`."""
    if depth > MAX_CIFF_DEPTH or len(heap) < 6:
        return
    (table,) = struct.unpack_from(endian + "L", heap, len(heap) - 4)
    if table + 2 > len(heap) - 4:
        return
    (count,) = struct.unpack_from(endian + "H", heap, table)
    for index in range(min(count, MAX_CIFF_ENTRIES)):
        position = table + 2 + 10 * index
        if position + 10 > len(heap):
            return
        tag, size, offset = struct.unpack_from(endian + "HLL", heap, position)
        if tag & 0xC000 == 0x4000:  # the value is stored in the record itself (8 bytes)
            found.setdefault(tag & 0x3FFF, heap[position + 2 : position + 10])
            continue
        if offset + size > len(heap):
            continue
        value = heap[offset : offset + size]
        if tag & 0x3800 in CIFF_SUBDIRECTORY_TYPES:
            _ciff_records(value, endian, depth + 1, found)
        else:
            found.setdefault(tag & 0x3FFF, value)


def read_ciff(segment: bytes) -> Facts:
    """Facts from a Canon CIFF APP0 segment; {} for any other APP0."""
    if len(segment) < 14 or segment[:2] not in (b"II", b"MM") or segment[6:14] != CIFF_SIGNATURE:
        return {}
    endian = "<" if segment[:2] == b"II" else ">"
    (header,) = struct.unpack_from(endian + "L", segment, 2)
    if not 14 <= header < len(segment):
        return {}
    found: dict[int, bytes] = {}
    _ciff_records(segment[header:], endian, 0, found)
    facts: Facts = {}
    make_model = found.get(CIFF_MAKE_MODEL, b"").split(b"\x00")
    if len(make_model) >= 2 and make_model[0] and make_model[1]:
        facts["make"] = make_model[0].decode("latin-1").strip()
        facts["model"] = make_model[1].decode("latin-1").strip()
    stamp = found.get(CIFF_TIME_STAMP, b"")
    if len(stamp) >= 4 and (taken := _unix_time(struct.unpack_from(endian + "L", stamp)[0])):
        facts["datetime_original"] = taken
    focal = found.get(CIFF_FOCAL_LENGTH, b"")
    if len(focal) >= 4 and (millimetres := struct.unpack_from(endian + "2H", focal)[1]):
        facts["focal_length_mm"] = float(millimetres)
    return facts


_PICTURE_INFO_LINE = re.compile(rb"^(TimeDate|Shutter|FNumber)=(.+?)\s*$", re.MULTILINE | re.IGNORECASE)


def read_picture_info(segment: bytes) -> Facts:
    """Facts from an Olympus '[picture info]' APP12 segment; {} for any other APP12."""
    if b"[picture info]" not in segment[:256]:
        return {}
    values = {key.decode().lower(): value.decode("latin-1") for key, value in _PICTURE_INFO_LINE.findall(segment)}
    facts: Facts = {}
    if values.get("timedate", "").isdigit() and (taken := _unix_time(int(values["timedate"]))):
        facts["datetime_original"] = taken
    if values.get("shutter", "").isdigit() and int(values["shutter"]) > 0:
        facts["exposure_time_s"] = int(values["shutter"]) / 1e6  # microseconds
    aperture = values.get("fnumber", "").upper().removeprefix("F")
    try:
        if math.isfinite(float(aperture)) and float(aperture) > 0:  # not "inf" or "nan"
            facts["f_number"] = float(aperture)
    except ValueError:
        pass
    return facts


def read_legacy_blocks(applist: list[tuple[str, bytes]]) -> tuple[Facts, str | None]:
    """(facts, source) from the first CIFF APP0 or picture-info APP12 segment of a JPEG."""
    for marker, segment in applist:
        if marker == "APP0" and (facts := read_ciff(segment)):
            return facts, "canon_ciff"
        if marker == "APP12" and (facts := read_picture_info(segment)):
            return facts, "olympus_picture_info"
    return {}, None
