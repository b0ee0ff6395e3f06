"""JPEG marker-segment facts shared by the decoders: which markers are frames, scans, parameterless; how many scans a
file has (progressive "scan bombs": thousands of tiny scans, each a pass over every block of the image)."""

import re
import struct

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
