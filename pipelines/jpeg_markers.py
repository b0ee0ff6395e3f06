"""JPEG facts shared by the decoders: which markers are frames, scans, parameterless; how many scans a file has
(progressive "scan bombs": thousands of tiny scans, each a pass over every block of the image); and which of libjpeg's
warnings mean lost pixels, the one rule of every decode that analyses or converts a JPEG (`decode_jpeg_checked`).

libjpeg reports data it could not use as a *warning* and goes on, filling what is missing with grey: a file cut short
(even with an end marker appended), a frame header claiming more rows than the data holds, entropy-coded data that
lost its sync (damaged bytes leave the decoder done before the data is, "N extraneous bytes before marker 0xd9", or
short of it, "premature end of data segment"). Pillow and OpenCV say nothing of it. Measured: none of the 3,096
JPEGs under ../shared/data (ImageNet samples, BIQ2021, ~40 camera and phone models, blur samples) makes libjpeg warn at
all, while a random byte changed in a photo's scan data shows up as one of these warnings in about half the cases.
"""

import re
import struct
from typing import Literal

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


def jpeg_scan_count(data: bytes, stop_after: int = 1 << 30) -> int:
    """Scans (SOS segments) of the file's first image as libjpeg reads them: segments are skipped by their lengths
    (a marker inside a COM, APPn, DHT or SOS header is no marker), bytes between segments are skipped up to the next
    0xFF (libjpeg warns and does the same), entropy-coded data runs to the next 0xFF that is not stuffing (FF00), a
    restart marker or a fill byte; EOI ends the image. Counting stops past `stop_after`."""
    i, n, scans = 2, len(data), 0
    while i < n:
        j = data.find(b"\xff", i)
        if j < 0 or j + 1 >= n:
            break
        marker = data[j + 1]
        if marker in (0xFF, 0x00):  # a fill byte, or a stray stuffed pair outside a scan: not a marker
            i = j + 1
            continue
        if marker == END_OF_IMAGE:
            break
        if marker in PARAMETERLESS:
            i = j + 2
            continue
        if j + 4 > n:
            break
        i = j + 2 + struct.unpack(">H", data[j + 2 : j + 4])[0]
        if marker == START_OF_SCAN:
            scans += 1
            if scans > stop_after:
                break
            found = _MARKER_IN_ENTROPY_DATA.search(data, i)
            if found is None:
                break
            i = found.start()
    return scans


def scan_limit(width: int, height: int) -> int:
    """Most scans a progressive JPEG of this size may have: 2,000 scan-megapixels (about 1.4 s of decoding on a
    2-core EPYC), between 32 and 500 scans. Encoders write about 10 (libjpeg) to 30 (mozjpeg's optimised scans)."""
    megapixels = max(width * height / 1e6, 1e-6)
    return int(min(500, max(32, 2000 / megapixels)))


JpegColours = Literal["RGB", "GRAY", "CMYK"]
TRUNCATED = "JPEG data ends early: the image is truncated or damaged"
# More bytes than this left over after a scan's coded blocks mean the decoder lost its way in them (a damaged byte
# changed how the rest was read). A few stray bytes before the end marker are an encoder's quirk (webcams' MJPEG
# frames), and stray bytes between header segments lose nothing: both stay accepted.
MAX_STRAY_BYTES_AFTER_SCAN = 8
_AFTER_SCAN_MARKERS = ("0xd9", "0xda")  # EOI, or the next scan's SOS
_EXTRANEOUS = re.compile(r"(\d+) extraneous bytes before marker (0x[0-9a-f]{2})")
_LOST_DATA: tuple[tuple[str, str], ...] = (  # libjpeg's message (part) -> the server's words
    ("premature end of data segment", TRUNCATED),
    ("Premature end of JPEG file", TRUNCATED),
    ("bad Huffman code", "JPEG data is corrupt (bad Huffman code): part of the image is damaged"),
    ("bad arithmetic code", "JPEG data is corrupt (bad arithmetic code): part of the image is damaged"),
    ("instead of RST", "JPEG data is corrupt (restart markers out of sequence): part of the image is lost"),
)


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
    (a warning that loses nothing, or an error another decoder may get past). `data`: the file, to tell padding
    before its end marker from a damaged scan's leftovers."""
    for libjpeg_text, ours in _LOST_DATA:
        if libjpeg_text in message:
            return ours
    stray = _EXTRANEOUS.search(message)
    count = int(stray.group(1)) if stray else 0
    if stray and stray.group(2) in _AFTER_SCAN_MARKERS and count > MAX_STRAY_BYTES_AFTER_SCAN:
        if stray.group(2) == "0xd9" and _padding_before_end(data, count):
            return None
        return (
            f"JPEG data is corrupt: {stray.group(1)} bytes of a scan were left over after its last block (the coded"
            " data is damaged)"
        )
    return None


def decode_jpeg_checked(
    data: bytes, colours: JpegColours = "RGB", min_factor: int = 1, min_width: int = 0, min_height: int = 0
) -> np.ndarray | None:
    """The JPEG's pixels (HxWxC uint8) by libjpeg-turbo (simplejpeg) at the smallest DCT scale M/8 that keeps at least
    `min_width` x `min_height` and shrinks by at least `min_factor` (accurate DCT and upsampling: Pillow's and
    libvips' pixels). Raises `InvalidImageError` where libjpeg warns of lost data (`lost_data`). None where libjpeg
    stops at anything else (a harmless warning: libjpeg-turbo's API stops at the first one; a conversion it does not
    offer): the caller's own decoder then decodes it, as it did every file before this check."""
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace=colours, min_factor=min_factor, min_width=min_width, min_height=min_height, strict=True
        )
    except ValueError as exc:
        damage = lost_data(str(exc), data)
        if damage:
            raise InvalidImageError(damage) from None
        return None


def check_jpeg_data(data: bytes, pillow_mode: str) -> None:
    """Refuse a JPEG whose data libjpeg reads with loss (`lost_data`), for decoders that do not say (OpenCV, libvips):
    a decode at 1/8 scale, which still reads every coded block. (simplejpeg applies `min_factor` only with a minimum
    size: without one it decodes at full size.)"""
    decode_jpeg_checked(data, "CMYK" if pillow_mode == "CMYK" else "RGB", min_factor=8, min_width=1, min_height=1)
