"""Camera facts from maker notes, for the files whose standard EXIF lacks them.

Only what collection insights need (ISO, lens, capture time) and only from the vendors whose notes carry it
in a documented, stable layout: Canon (ISO from CameraSettings/ShotInfo), Casio type 2 (ISO), Olympus (the
lens of the Equipment IFD) and Reconyx HyperFire trail cameras (capture time). The conversions are
ExifTool's (Image::ExifTool::Canon, ::Casio, ::Olympus, ::Reconyx), so the values agree with what
`exiftool -n` prints.

The IFDs themselves are parsed by Pillow's `ImageFileDirectory_v2` (bounds-checked, shared with every EXIF
read of the project); this module only finds where a note starts and picks its tags. No maintained Python
library reads these values as ExifTool does (docs/METADATA.md: exifread returns Canon's raw codes and no
Olympus lens or Casio ISO; python-exiv2's Canon ISO differs from ExifTool's and it is native code).
"""

import io
import math
import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

from PIL import TiffImagePlugin

from pipelines.metadata import tag_values as tv

EXIF_IFD_POINTER, MAKER_NOTE = 0x8769, 0x927C
MAX_ENTRIES = 1000  # an IFD with more entries than this is not a real one
NOTE_GROUP = MAKER_NOTE  # a Pillow tag group with no tag definitions: values are taken as stored
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}

# ExifTool's Canon::CameraISO lookup for CameraSettings[16] values without the 0x4000 "raw ISO" flag.
CANON_CAMERA_ISO = {16: 50, 17: 100, 18: 200, 19: 400, 20: 800}

Facts = dict[str, Any]  # ExifInfo field name -> value


def exif_tiff(exif_block: bytes) -> bytes | None:
    """The TIFF structure inside an EXIF block (JPEG APP1 starts it with 'Exif\\0\\0')."""
    data = exif_block[6:] if exif_block.startswith(b"Exif\x00\x00") else exif_block
    return data if data[:4] in (b"II*\x00", b"MM\x00*") else None


def _entry(tiff: bytes, endian: str, ifd_offset: int, tag: int) -> tuple[int, int] | None:
    """(offset, size) of one tag's value inside `tiff`; None when the tag or its bytes are not there."""
    if ifd_offset <= 0 or ifd_offset + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(endian + "H", tiff, ifd_offset)
    for index in range(min(count, MAX_ENTRIES)):
        position = ifd_offset + 2 + 12 * index
        if position + 12 > len(tiff):
            return None
        found, kind, items, value = struct.unpack_from(endian + "HHL4s", tiff, position)
        if found != tag:
            continue
        size = items * TYPE_SIZES.get(kind, 1)
        offset = position + 8 if size <= 4 else struct.unpack(endian + "L", value)[0]
        return (offset, size) if offset + size <= len(tiff) else None
    return None


def _ifd(data: bytes, offset: int, endian: str) -> dict[int, Any]:
    """Pillow's parse of the IFD at `offset`; offsets inside it are relative to the start of `data`."""
    if offset <= 0 or offset + 2 > len(data):
        return {}
    directory = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II" if endian == "<" else b"MM", group=NOTE_GROUP)
    stream = io.BytesIO(data)
    stream.seek(offset)
    directory.load(stream)
    return dict(directory)


def _signed16(values: Any, index: int) -> int | None:
    """Element `index` of an int16 array stored as SHORT (ExifTool reads these Canon arrays as int16s)."""
    if not isinstance(values, tuple) or index >= len(values) or not isinstance(values[index], int):
        return None
    value = values[index]
    return value - 0x10000 if value >= 0x8000 else value


def _canon_relocated(tiff: bytes, endian: str, offset: int, size: int) -> tuple[bytes, int, str]:
    """(data, note offset, byte order) with the note's offsets valid again when an editor moved the note.

    Canon notes end with a footer 'II*\\0' (or 'MM\\0*') + the note's original offset, in the note's own byte
    order, which an editor that rewrote the TIFF may have changed around it. ExifTool shifts the base the same way.
    """
    footer = tiff[offset + size - 8 : offset + size]
    if size < 8 or footer[:4] not in (b"II*\x00", b"MM\x00*"):
        return tiff, offset, endian
    order = "<" if footer[:2] == b"II" else ">"
    (original,) = struct.unpack(order + "L", footer[4:])
    shift = offset - original
    if abs(shift) > len(tiff):
        return tiff, offset, order
    return (tiff[shift:] if shift >= 0 else bytes(-shift) + tiff), original, order


def _canon(tiff: bytes, endian: str, offset: int, size: int) -> Facts:
    note = _ifd(*_canon_relocated(tiff, endian, offset, size))
    camera_iso = _signed16(note.get(0x0001), 16)  # CameraSettings[16]
    if camera_iso is not None and camera_iso != 0x7FFF:
        iso = camera_iso & 0x3FFF if camera_iso & 0x4000 else CANON_CAMERA_ISO.get(camera_iso)
        if iso:
            return {"iso": iso}
    auto, base = _signed16(note.get(0x0004), 1), _signed16(note.get(0x0004), 2)  # ShotInfo AutoISO, BaseISO
    if not base or auto is None:
        return {}
    # ExifTool's Composite:ISO = BaseISO * AutoISO / 100, both stored as APEX-like codes.
    iso = math.exp(base / 32 * math.log(2)) * 100 / 32 * math.exp(auto / 32 * math.log(2))
    return {"iso": round(iso)} if math.isfinite(iso) and iso < 1e7 else {}


def _casio(tiff: bytes, endian: str, offset: int, _size: int) -> Facts:
    if tiff[offset : offset + 4] != b"QVC\x00":  # type 1 stores ISO as a code; only type 2 is read
        return {}
    iso = tv.integer(_ifd(tiff, offset + 6, endian).get(0x3014))
    return {} if iso is None else {"iso": iso}


def _olympus(tiff: bytes, endian: str, offset: int, size: int) -> Facts:
    note = tiff[offset : offset + size]
    if note.startswith(b"OLYMPUS\x00") and note[8:10] in (b"II", b"MM"):  # offsets relative to the note
        base, start, order = note, 12, "<" if note[8:10] == b"II" else ">"
    elif note.startswith(b"OLYMP\x00"):  # offsets relative to the TIFF header
        base, start, order = tiff, offset + 8, endian
    else:
        return {}
    equipment = tv.integer(_ifd(base, start, order).get(0x2010))
    lens = tv.text(_ifd(base, equipment, order).get(0x0203)) if equipment else None
    return {"lens_model": lens} if lens else {}


def _reconyx(tiff: bytes, endian: str, offset: int, size: int) -> Facts:
    note = tiff[offset : offset + size]
    if len(note) < 0x0B * 2 + 12 or note[:2] != b"\x01\xf1":  # HyperFire layout, little-endian int16u
        return {}
    second, minute, hour, month, day, year = struct.unpack_from("<6H", note, 0x0B * 2)
    try:
        taken = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return {}
    return {"datetime_original": taken.isoformat()}


READERS: dict[str, Callable[[bytes, str, int, int], Facts]] = {
    "canon": _canon,
    "casio": _casio,
    "olympus": _olympus,
    "om digital": _olympus,
}


def read_maker_note(exif_block: bytes, make: str | None) -> tuple[Facts, str | None]:
    """(facts, source) from the maker note of an EXIF block; ({}, None) when there is nothing to read."""
    tiff = exif_tiff(exif_block)
    if tiff is None or len(tiff) < 8:
        return {}, None
    endian = "<" if tiff[:2] == b"II" else ">"
    exif_ifd = _entry(tiff, endian, struct.unpack_from(endian + "L", tiff, 4)[0], EXIF_IFD_POINTER)
    if exif_ifd is None or exif_ifd[1] != 4:
        return {}, None
    note = _entry(tiff, endian, struct.unpack_from(endian + "L", tiff, exif_ifd[0])[0], MAKER_NOTE)
    if note is None:
        return {}, None
    offset, size = note
    if tiff[offset : offset + 2] == b"\x01\xf1":  # Reconyx writes no Make
        return _reconyx(tiff, endian, offset, size), "reconyx_makernote"
    vendor = next((name for name in READERS if make and make.lower().startswith(name)), None)
    if vendor is None:
        return {}, None
    return READERS[vendor](tiff, endian, offset, size), f"{vendor.replace(' ', '_')}_makernote"
