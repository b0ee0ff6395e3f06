"""The fast path for JPEG inputs: libjpeg-turbo's scaled decode (simplejpeg), then libvips for everything after
(resize, bit depth, alpha, metadata, every output format).

libvips' `thumbnail` also decodes JPEGs at reduced scale, but its Lanczos resize and its pipeline cost more than
the decode itself for thumbnails: JPEG -> 512-px JPEG took 24 ms a camera photo through `thumbnail` and 16 ms
here (BENCHMARKS.md, "Conversion"). The shrink a scaled decode leaves is below 2 (unless even 1/8 is over twice the
output); libvips' resize with its cubic kernel, whose support widens with the shrink (every source pixel counts, as
in area averaging), gives 40.8 dB on the camera mix at 512 px against a Lanczos resize of the full decode, where
OpenCV's area resize gave 40.5 (ImageNet samples: from 0.04 dB worse to 2.9 dB better than area averaging at shrinks
of 1.4-1.9). The DCT and upsampling stay libjpeg-turbo's accurate ones, so without a resize the pixels are exactly
Pillow's and libvips' decode.

A lossy WebP's frame is computed into memory and the decoded photo dropped before libwebp encodes it
(`pipelines.convert.libwebp`): a 12 MP photo to a 2048-px WebP holds its 5/8-scale decode (14 MB) only until the 9 MB
frame exists. `DECODE_BUDGET` can bound how many bytes of such decodes a process holds at once (`DecodeBudget`; the
bulk commands set it).

Taken only where it gives the same answer as the libvips path: a baseline or progressive JPEG (not MPO) in RGB or
greyscale, no colour transform needed (no profile, or sRGB, or `icc=keep`), no IPTC block (the metadata this
path carries over is EXIF, XMP and the ICC profile), and a decode (at the scale the output needs) within the
full-decode pixel budget. Everything else goes through `thumbnail`, which streams.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pyvips
from PIL import Image

from pipelines.convert.pillow_input import from_upright_pixels
from pipelines.jpeg_markers import decode_jpeg_checked
from pipelines.orientation import SWAPS_AXES, upright_array


class DecodeBudget:
    """At most `limit` bytes of decoded photos (with their resized frames) at once in this process; 0: no limit.

    `take` (the fast path's decode, for outputs whose frame is computed into memory before encoding: lossy WebP)
    waits while the budget is spent; what a thread took inside `scope` is given back when that block ends (the
    conversion drops the decode there). Outside a scope nothing is taken. A decode larger than the whole budget still
    runs, alone. Decodes are short next to encoders (a 12 MP photo: ~45 ms to decode and resize, ~100 ms to encode as
    WebP), so a worker waiting for one loses little."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self._in_use = 0
        self._changed = threading.Condition()
        self._local = threading.local()

    @contextmanager
    def scope(self) -> Iterator[None]:
        if getattr(self._local, "held", None) is not None:  # nested: the outer scope gives back
            yield
            return
        self._local.held = []
        try:
            yield
        finally:
            taken, self._local.held = sum(self._local.held), None
            if taken:
                with self._changed:
                    self._in_use -= taken
                    self._changed.notify_all()

    def take(self, size: int) -> None:
        held = getattr(self._local, "held", None)
        if held is None or not self.limit:
            return
        mine = sum(held)
        with self._changed:
            while self._in_use > mine and self._in_use + size > self.limit:  # others hold some: wait for them
                self._changed.wait()
            self._in_use += size
        held.append(size)


DECODE_BUDGET = DecodeBudget()


def applies(header: Image.Image, needs_transform: bool) -> bool:
    if header.format != "JPEG" or header.mode not in ("RGB", "L") or needs_transform:
        return False
    return not any(marker == "APP13" for marker, _ in getattr(header, "applist", []))


def decoded_pixels(header: Image.Image, size: tuple[int, int], orientation: int) -> int:
    """Pixels libjpeg-turbo decodes for an output of `size`: the smallest scale M/8 (M = 1..8) that covers it."""
    width, height = size
    stored_w, stored_h = (height, width) if orientation in SWAPS_AXES else (width, height)
    full_w, full_h = header.size
    m = max(1, min(8, max(-(-8 * stored_w // full_w), -(-8 * stored_h // full_h))))
    return -(-full_w * m // 8) * -(-full_h * m // 8)


def load_jpeg(
    data: bytes, header: Image.Image, orientation: int, size: tuple[int, int], budgeted: bool = False
) -> pyvips.Image | None:
    """The JPEG upright at `size` (width, height: what `thumbnail` would give), with its EXIF, XMP and ICC profile
    and orientation 1; `budgeted`: the decode and its frame are taken from `DECODE_BUDGET` first. Raises
    `InvalidImageError` where libjpeg loses data (truncated or damaged: the decode stage's rule,
    `pipelines.jpeg_markers.decode_jpeg_checked`); None where libvips is to decode it (a harmless warning)."""
    width, height = size
    stored_w, stored_h = (height, width) if orientation in SWAPS_AXES else (width, height)
    grey = header.mode == "L"
    if budgeted:
        DECODE_BUDGET.take((decoded_pixels(header, size, orientation) + width * height) * (1 if grey else 3))
    pixels = decode_jpeg_checked(data, "GRAY" if grey else "RGB", min_width=stored_w, min_height=stored_h)
    if pixels is None:
        return None
    pixels = upright_array(pixels, orientation)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    image = from_upright_pixels(pixels, "b-w" if grey else "srgb", header)
    if image.width != width or image.height != height:
        image = image.resize(width / image.width, vscale=height / image.height, kernel="cubic")
    return image
