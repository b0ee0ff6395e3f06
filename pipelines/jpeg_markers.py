"""JPEG marker-segment facts shared by the decoders: which markers are frames, scans, parameterless; how many scans a
file has (progressive "scan bombs": thousands of tiny scans, each a pass over every block of the image)."""

import struct

# Start-of-frame markers (every JPEG coding process); C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
START_OF_SCAN = 0xDA
PARAMETERLESS = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field
_SOS, _EOI = b"\xff\xda", b"\xff\xd9"


def first_scan_offset(data: bytes) -> int | None:
    """Offset of the first SOS marker, walking the header segments (their payloads may hold any bytes)."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in PARAMETERLESS:
            i += 2
        elif marker == START_OF_SCAN:
            return i
        else:
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def jpeg_scan_count(data: bytes) -> int:
    """Scans of the file's first image. From the first SOS to the first EOI no segment payload can hide a marker
    (entropy-coded 0xFF bytes are stuffed with 0x00), so counting SOS markers there is exact for any real file; an
    EXIF thumbnail (before the first scan) and data after EOI (an MPO's second image, a motion photo's video) are
    not counted. A hostile file with APPn segments between scans can only be over-counted."""
    start = first_scan_offset(data)
    if start is None:
        return 0
    end = data.find(_EOI, start)
    return data.count(_SOS, start, end if end >= 0 else len(data))


def scan_limit(width: int, height: int) -> int:
    """Most scans a progressive JPEG of this size may have: 2,000 scan-megapixels (about 1.4 s of decoding on a
    2-core EPYC), between 32 and 500 scans. Encoders write about 10 (libjpeg) to 30 (mozjpeg's optimised scans)."""
    megapixels = max(width * height / 1e6, 1e-6)
    return int(min(500, max(32, 2000 / megapixels)))
