"""The fast path for JPEG inputs: libjpeg-turbo's scaled decode (simplejpeg), resize (OpenCV), then libvips for
everything after (bit depth, alpha, metadata, every output format).

libvips' `thumbnail` also decodes JPEGs at reduced scale, but its Lanczos resize and its pipeline cost more than
the decode itself for thumbnails: JPEG -> 512-px JPEG took 24 ms a camera photo through `thumbnail` and 16 ms
here (BENCHMARKS.md, "Conversion"). Area averaging is the right filter for shrinking (every source pixel counts
once, no ringing); for the small shrinks a scaled decode leaves, bilinear does the same faster (`LINEAR_MAX_SHRINK`).
The DCT and upsampling stay libjpeg-turbo's accurate ones, so without a resize the pixels are exactly Pillow's and
libvips' decode.

Taken only where it gives the same answer as the libvips path: a baseline or progressive JPEG (not MPO) in RGB or
greyscale, no colour transform needed (no profile, or sRGB, or `icc=keep`), no IPTC block (the metadata this
path carries over is EXIF, XMP and the ICC profile), and a decode (at the scale the output needs) within the
full-decode pixel budget. Everything else goes through `thumbnail`, which streams.
"""

import cv2
import pyvips
from PIL import Image

from pipelines.convert.pillow_input import from_upright_pixels
from pipelines.jpeg_markers import decode_jpeg_checked
from pipelines.orientation import SWAPS_AXES, upright_array

# After the scaled decode the shrink left is below 2 unless even the 1/8 scale is over twice the output (small
# thumbnails), and mostly 1.05-1.25 for a 2048-px output. There bilinear's two-pixel kernel covers every source pixel
# and lands as close to a Lanczos resize of the full decode as OpenCV's area filter (PSNR within 0.5 dB either way on
# the camera mix), which is slow at fractional ratios: WebP at 2048 px took 126 ms a camera photo against 137 (one
# thread, alternated in one process; BENCHMARKS.md, "Conversion"). Near a shrink of 2 bilinear starts to skip pixels
# (2.4 dB worse at 1.97): area from 1.5 up.
LINEAR_MAX_SHRINK = 1.5


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


def _interpolation(shrink: float) -> int:
    """OpenCV's filter for a resize by 1/`shrink`: area averaging from a shrink of `LINEAR_MAX_SHRINK` up, bilinear
    below it, bicubic to enlarge."""
    if shrink < 1.0:
        return cv2.INTER_CUBIC
    return cv2.INTER_LINEAR if shrink <= LINEAR_MAX_SHRINK else cv2.INTER_AREA


def load_jpeg(data: bytes, header: Image.Image, orientation: int, size: tuple[int, int]) -> pyvips.Image | None:
    """The JPEG upright at `size` (width, height: what `thumbnail` would give), with its EXIF, XMP and ICC profile
    and orientation 1. Raises `InvalidImageError` where libjpeg loses data (truncated or damaged: the decode stage's
    rule, `pipelines.jpeg_markers.decode_jpeg_checked`); None where libvips is to decode it (a harmless warning)."""
    width, height = size
    stored_w, stored_h = (height, width) if orientation in SWAPS_AXES else (width, height)
    grey = header.mode == "L"
    pixels = decode_jpeg_checked(data, "GRAY" if grey else "RGB", min_width=stored_w, min_height=stored_h)
    if pixels is None:
        return None
    pixels = upright_array(pixels, orientation)
    if pixels.shape[1] != width or pixels.shape[0] != height:
        pixels = cv2.resize(pixels, (width, height), interpolation=_interpolation(pixels.shape[1] / width))
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return from_upright_pixels(pixels, "b-w" if grey else "srgb", header)
