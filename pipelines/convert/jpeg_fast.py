"""The fast path for JPEG inputs: libjpeg-turbo's scaled decode (simplejpeg), area resize (OpenCV), then libvips
for everything after (bit depth, alpha, metadata, every output format).

libvips' `thumbnail` also decodes JPEGs at reduced scale, but its Lanczos resize and its pipeline cost more than
the decode itself for thumbnails: JPEG -> 512-px JPEG took 24 ms a camera photo through `thumbnail` and 16 ms
here (BENCHMARKS.md, "Conversion"). Area averaging is the right filter for shrinking (every source pixel counts
once, no ringing). The DCT and upsampling stay libjpeg-turbo's accurate ones, so without a resize the pixels are
exactly Pillow's and libvips' decode.

Taken only where it gives the same answer as the libvips path: a baseline or progressive JPEG (not MPO) in RGB or
greyscale, no colour transform needed (no profile, or sRGB, or `icc=keep`), no IPTC block (the metadata this
path carries over is EXIF, XMP and the ICC profile), and a decode (at the scale the output needs) within the
full-decode pixel budget. Everything else goes through `thumbnail`, which streams.
"""

import cv2
import pyvips
import simplejpeg
from PIL import Image

from pipelines.convert.pillow_input import from_upright_pixels
from pipelines.errors import InvalidImageError
from pipelines.orientation import SWAPS_AXES, upright_array


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


def load_jpeg(data: bytes, header: Image.Image, orientation: int, size: tuple[int, int]) -> pyvips.Image:
    """The JPEG upright at `size` (width, height: what `thumbnail` would give), with its EXIF, XMP and ICC profile
    and orientation 1. Raises `InvalidImageError` on a corrupt or truncated file."""
    width, height = size
    stored_w, stored_h = (height, width) if orientation in SWAPS_AXES else (width, height)
    grey = header.mode == "L"
    try:
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="GRAY" if grey else "RGB", min_width=stored_w, min_height=stored_h, strict=True
        )
    except ValueError as exc:
        raise InvalidImageError(f"image could not be decoded: {exc}") from None
    pixels = upright_array(pixels, orientation)
    if pixels.shape[1] != width or pixels.shape[0] != height:
        shrinking = pixels.shape[1] > width
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return from_upright_pixels(pixels, "b-w" if grey else "srgb", header)
