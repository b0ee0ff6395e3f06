"""JPEG facts shared by the decoders: which markers are frames, scans, parameterless; how many scans a file has
(progressive "scan bombs": thousands of tiny scans, each a pass over every block of the image); and which of libjpeg's
warnings mean lost pixels, the one rule of every decode that analyses or converts a JPEG (`decode_jpeg_checked`).

libjpeg reports data it could not use as a *warning* and goes on, filling what is missing with grey: a file cut short
(even with an end marker appended), a frame header claiming more rows than the data holds, entropy-coded data that
lost its sync (damaged bytes leave the decoder done before the data is, "N extraneous bytes before marker 0xd9", or
short of it, "premature end of data segment"). Pillow and OpenCV say nothing of it. Measured: none of the 3,096
JPEGs under ../shared/data (ImageNet samples, BIQ2021, ~40 camera and phone models, blur samples) makes libjpeg warn at
all, while a random byte changed in a photo's scan data shows up as one of these warnings in about half the cases.
libjpeg-turbo's API stops at the first warning, harmless ones too (stray bytes between header segments, an unknown
JFIF revision or Adobe transform: libjpeg reads past them), so a file with one is read again without it, to the end.
"""

import re
import struct
from collections.abc import Iterator
from itertools import islice
from typing import Literal, NamedTuple

import numpy as np
import simplejpeg

from pipelines.errors import InvalidImageError

# Start-of-frame markers (every JPEG coding process); C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
START_OF_SCAN = 0xDA
PARAMETERLESS = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field
END_OF_IMAGE = 0xD9
# Inside entropy-coded data 0xFF is followed by 0x00 (stuffing), 0xD0-0xD7 (restart) or 0xFF (fill): anything else
# is the marker that ends the scan.
_MARKER_IN_ENTROPY_DATA = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
# Outside entropy-coded data a marker is 0xFF and a code that is neither 0x00 (a stray stuffed pair) nor 0xFF (fill).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")


class Marker(NamedTuple):
    """A marker of the file's first image: `code` at `position` (its 0xFF), after bytes libjpeg skipped from `gap`
    (a gap between segments, or fill bytes; empty where the marker follows its segment or scan at once)."""

    gap: int
    position: int
    code: int


def jpeg_markers(data: bytes) -> Iterator[Marker]:
    """The markers of the file's first image as libjpeg reads them: segments are skipped by their lengths (a marker
    inside a COM, APPn, DHT or SOS header is no marker), bytes between segments are skipped up to the next 0xFF
    (libjpeg warns and does the same), entropy-coded data runs to the next 0xFF that is not stuffing (FF00), a restart
    marker or a fill byte; EOI ends the image."""
    i = gap = 2
    n = len(data)
    while i < n:
        found = _NEXT_MARKER.search(data, i)  # past fill bytes and stray stuffed pairs, in C (not a byte per step)
        if found is None:
            return
        j = found.start()
        code = data[j + 1]
        if code not in PARAMETERLESS and code != END_OF_IMAGE and j + 4 > n:
            return
        yield Marker(gap, j, code)
        if code == END_OF_IMAGE:
            return
        if code in PARAMETERLESS:
            i = j + 2
        else:
            i = j + 2 + struct.unpack(">H", data[j + 2 : j + 4])[0]
            if code == START_OF_SCAN:
                found = _MARKER_IN_ENTROPY_DATA.search(data, i)
                if found is None:
                    return
                i = found.start()
        gap = i


def jpeg_scan_count(data: bytes, stop_after: int = 1 << 30) -> int:
    """Scans (SOS segments) of the file's first image as libjpeg reads them (`jpeg_markers`). Counting stops past
    `stop_after`; a file of more than `_MAX_MARKERS_SEARCHED` markers is refused (InvalidImageError)."""
    scans = 0
    for count, marker in enumerate(jpeg_markers(data), 1):
        if count > _MAX_MARKERS_SEARCHED:  # a flood of empty segments between scans: 32 MiB of them, 10 s of Python
            raise _too_many_markers()
        if marker.code == START_OF_SCAN:
            scans += 1
            if scans > stop_after:
                break
    return scans


def check_header_markers(data: bytes) -> None:
    """Refuse a JPEG with more than `_MAX_MARKERS_SEARCHED` markers, or more than `MAX_HEADER_SKIPPED_BYTES` bytes
    between its segments (fill bytes, stray pairs, junk), before its first scan, before Pillow reads its header:
    Pillow parses each segment, and steps over each fill byte, in Python (8 MB of empty COM segments: 2 s; 32 MiB of
    fill bytes: 12 s a request)."""
    skipped = 0
    for count, marker in enumerate(jpeg_markers(data), 1):
        skipped += marker.position - marker.gap
        if skipped > MAX_HEADER_SKIPPED_BYTES:
            raise InvalidImageError(
                f"JPEG has more than {MAX_HEADER_SKIPPED_BYTES:,} bytes between its header segments (fill or junk"
                " bytes; a photo has none, a few at most): refused rather than read"
            )
        if marker.code == START_OF_SCAN:
            return
        if count > _MAX_MARKERS_SEARCHED:
            raise _too_many_markers()


def _too_many_markers() -> InvalidImageError:
    return InvalidImageError(
        f"JPEG has more than {_MAX_MARKERS_SEARCHED:,} marker segments (a photo has tens, a few hundred at most):"
        " refused rather than read"
    )


def scan_limit(width: int, height: int) -> int:
    """Most scans a progressive JPEG of this size may have: 2,000 scan-megapixels (about 1.4 s of decoding on a
    2-core EPYC), between 32 and 500 scans. Encoders write about 10 (libjpeg) to 30 (mozjpeg's optimised scans)."""
    megapixels = max(width * height / 1e6, 1e-6)
    return int(min(500, max(32, 2000 / megapixels)))


JpegColours = Literal["RGB", "GRAY", "CMYK"]
TRUNCATED = "JPEG data ends early: the image is truncated or damaged"
# Bytes left over after coded data (a scan's, or a restart interval's, before its RSTn) mean the decoder lost its way
# in it: a damaged byte changed how the rest was read. Measured on photos with one random byte changed: a restart
# interval leaves 1 to thousands of bytes, a progressive scan often 8 or fewer. Only a few stray bytes before the end
# marker are an encoder's quirk (webcams' MJPEG frames), and bytes between header segments lose nothing (libjpeg
# skips them: `jpeg_markers`): both stay accepted.
MAX_STRAY_BYTES_AFTER_SCAN = 8
_RESTART = range(0xD0, 0xD8)
_EXTRANEOUS = re.compile(r"(\d+) extraneous bytes before marker (0x[0-9a-f]{2})")
_LOST_DATA: tuple[tuple[str, str], ...] = (  # libjpeg's message (part) -> the server's words
    ("premature end of data segment", TRUNCATED),
    ("Premature end of JPEG file", TRUNCATED),
    ("bad Huffman code", "JPEG data is corrupt (bad Huffman code): part of the image is damaged"),
    ("bad arithmetic code", "JPEG data is corrupt (bad arithmetic code): part of the image is damaged"),
    ("instead of RST", "JPEG data is corrupt (restart markers out of sequence): part of the image is lost"),
)
# Harmless warnings libjpeg goes on after, besides stray bytes, and the header field it reads past (`_repaired`).
_JFIF_REVISION = "unknown JFIF revision number"  # APP0 "JFIF\0" major version other than 1 or 2
_ADOBE_TRANSFORM = "Unknown Adobe color transform code"  # APP14 "Adobe" transform: libjpeg assumes YCbCr / YCCK
_HARMLESS_KINDS = 3  # stray bytes between segments, JFIF revision, Adobe transform: a repair round each at most
# A photo has tens of markers (a few hundred in a progressive file with tables per scan); stray bytes after more are
# taken for damage rather than walked to (10 MB of empty COM segments: 2.5 M markers, 3 s of Python a walk).
_MAX_MARKERS_SEARCHED = 10_000
# Bytes between header segments: none in any of the 3,096 JPEGs under ../shared/data, a few in some encoders' files.
MAX_HEADER_SKIPPED_BYTES = 65_536


def _skipped_count(gap: bytes) -> int:
    """libjpeg's count of the bytes it skipped before a marker: fill bytes (0xFF) before it not, a pair FF00 as 2."""
    return len(gap) - gap.count(0xFF) + gap.count(b"\xff\x00")


def _gaps_between_segments(data: bytes) -> list[Marker]:
    """The markers with bytes libjpeg skips before them (warning "N extraneous bytes before marker") between header
    segments: a stray byte, a segment length that is wrong. Bytes left over in coded data are no gap here. Only the
    first `_MAX_MARKERS_SEARCHED` markers are looked at."""
    markers = islice(jpeg_markers(data), _MAX_MARKERS_SEARCHED)
    return [marker for marker in markers if _skipped_count(data[marker.gap : marker.position])]


def _between_segments(data: bytes, count: int, code: int) -> bool:
    """Whether libjpeg's "`count` extraneous bytes before marker `code`" are bytes between header segments (the file's
    markers tell); without the file, the marker: EOI, SOS and RSTn follow coded data."""
    if not data:
        return code not in (END_OF_IMAGE, START_OF_SCAN, *_RESTART)
    gaps = _gaps_between_segments(data)
    return any(gap.code == code and _skipped_count(data[gap.gap : gap.position]) == count for gap in gaps)


def _padding_before_end(data: bytes, count: int) -> bool:
    """Whether the `count` bytes before the first image's end marker are padding (all 0x00 or 0xFF): some encoders and
    editors pad a complete scan (public reports of visually intact photos with "N extraneous bytes before marker
    0xd9"), while a damaged scan leaves coded data there. The first FFD9 after the first SOS is the first image's end:
    coded data never holds FFD9 (an FF in it is stuffed as FF00), so an MPO's later pictures come after it."""
    scan = data.find(b"\xff\xda")
    end = data.find(b"\xff\xd9", scan + 2) if scan >= 0 else -1
    return end >= count and set(data[end - count : end]) <= {0x00, 0xFF}


def lost_data(message: str, data: bytes = b"") -> str | None:
    """The server's words for a libjpeg warning (or error) that means pixels were lost; None for any other message
    (a warning that loses nothing, or an error another decoder may get past). `data`: the file, to tell bytes between
    header segments and padding before its end marker from a damaged scan's leftovers."""
    for libjpeg_text, ours in _LOST_DATA:
        if libjpeg_text in message:
            return ours
    stray = _EXTRANEOUS.search(message)
    if stray is None:
        return None
    count, code = int(stray.group(1)), int(stray.group(2), 16)
    if _between_segments(data, count, code):
        return None
    if code == END_OF_IMAGE and (count <= MAX_STRAY_BYTES_AFTER_SCAN or _padding_before_end(data, count)):
        return None
    where = "a restart interval" if code in _RESTART else "a scan"
    return (
        f"JPEG data is corrupt: {count} bytes of {where} were left over after its last block"
        " (the coded data is damaged)"
    )


def _header_markers(data: bytes) -> Iterator[Marker]:
    """The markers before the first scan, where every header segment (APPn, SOF) is; at most the first
    `_MAX_MARKERS_SEARCHED` (a flood of empty segments is not walked: 7.8 M COM segments, 5 s of Python a walk)."""
    for marker in islice(jpeg_markers(data), _MAX_MARKERS_SEARCHED):
        if marker.code == START_OF_SCAN:
            return
        yield marker


def _with_field(data: bytes, code: int, identifier: bytes, offset: int, value: int) -> bytes | None:
    """`data` with the byte at `offset` from each `code` header segment named `identifier` set to `value`; None if
    none (then the caller's own decoder reads the file, as before the harmless-warning check)."""
    patched = bytearray(data)
    for marker in _header_markers(data):
        start = marker.position + 4
        if marker.code == code and data[start : start + len(identifier)] == identifier and start + offset < len(data):
            patched[start + offset] = value
    return bytes(patched) if patched != data else None


def _repaired(data: bytes, message: str) -> bytes | None:
    """A copy of `data` without the harmless defect that libjpeg's warning `message` is about, as libjpeg reads past
    it: bytes between segments dropped, a header field it does not know set to what it assumes. None where there is
    nothing to repair (stray bytes before the end marker: the whole image was read; another message)."""
    if _EXTRANEOUS.search(message):
        pieces, start = [], 0
        for gap in _gaps_between_segments(data):
            pieces.append(data[start : gap.gap])
            start = gap.position
        return b"".join([*pieces, data[start:]]) if pieces else None
    if _JFIF_REVISION in message:
        return _with_field(data, 0xE0, b"JFIF\x00", 5, 1)
    if _ADOBE_TRANSFORM in message:
        frame = next((m.position for m in _header_markers(data) if m.code in SOF_MARKERS), -1)
        components = data[frame + 9] if 0 <= frame < len(data) - 9 else 3
        return _with_field(data, 0xEE, b"Adobe", 11, 2 if components == 4 else 1)
    return None


def _check_past_harmless_warnings(data: bytes, message: str, colours: JpegColours) -> None:
    """Raise `InvalidImageError` where libjpeg loses data after the harmless warning `message` that stopped the strict
    decode of `data` (libjpeg-turbo's API stops at the first warning of any kind, so the rest went unchecked): the
    defect is removed from a copy (`_repaired`) and the copy decoded strictly again, at 1/8 scale (every coded block
    is still read), a round for each harmless kind. Only files with such a warning pay for it."""
    for _ in range(_HARMLESS_KINDS):
        repaired = _repaired(data, message)
        if repaired is None:
            return
        try:
            simplejpeg.decode_jpeg(repaired, colorspace=colours, min_factor=8, min_width=1, min_height=1, strict=True)
            return
        except ValueError as exc:
            message = str(exc)
        damage = lost_data(message, repaired)
        if damage:
            raise InvalidImageError(damage)
        data = repaired


def decode_jpeg_checked(
    data: bytes, colours: JpegColours = "RGB", min_factor: int = 1, min_width: int = 0, min_height: int = 0
) -> np.ndarray | None:
    """The JPEG's pixels (HxWxC uint8) by libjpeg-turbo (simplejpeg) at the smallest DCT scale M/8 that keeps at least
    `min_width` x `min_height` and shrinks by at least `min_factor` (accurate DCT and upsampling: Pillow's and
    libvips' pixels). Raises `InvalidImageError` where libjpeg warns of lost data (`lost_data`), also after a harmless
    warning (`_check_past_harmless_warnings`). None where libjpeg stops at anything else (a harmless warning:
    libjpeg-turbo's API stops at the first one; a conversion it does not offer): the caller's own decoder then decodes
    it, as it did every file before this check."""
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace=colours, min_factor=min_factor, min_width=min_width, min_height=min_height, strict=True
        )
    except ValueError as exc:
        message = str(exc)
    damage = lost_data(message, data)
    if damage:
        raise InvalidImageError(damage)
    _check_past_harmless_warnings(data, message, colours)
    return None


def check_jpeg_data(data: bytes, pillow_mode: str) -> None:
    """Refuse a JPEG whose data libjpeg reads with loss (`lost_data`), for decoders that do not say (OpenCV, libvips):
    a decode at 1/8 scale, which still reads every coded block. (simplejpeg applies `min_factor` only with a minimum
    size: without one it decodes at full size.)"""
    decode_jpeg_checked(data, "CMYK" if pillow_mode == "CMYK" else "RGB", min_factor=8, min_width=1, min_height=1)
