"""The fast path for JPEG inputs: libjpeg-turbo's scaled decode (simplejpeg), then libvips for everything after
(resize, bit depth, alpha, metadata, every output format).

libvips' `thumbnail` also decodes JPEGs at reduced scale, but its Lanczos resize and its pipeline cost more than
the decode itself for thumbnails: JPEG -> 512-px JPEG took 24 ms a camera photo through `thumbnail` and 16 ms
here (BENCHMARKS.md, "Conversion"). The shrink a scaled decode leaves is below 2 (unless even 1/8 is over twice the
output); libvips' resize with its cubic kernel, whose support widens with the shrink (every source pixel counts, as
in area averaging), runs inside the encoder's pass: against a Lanczos resize of the full decode it gives 40.8 dB on
the camera mix at 512 px where OpenCV's area resize, which this path used before, gave 40.5 (ImageNet samples: from
0.04 dB worse to 2.9 dB better than area averaging at shrinks of 1.4-1.9), for 0.2 ms more per thumbnail, without
OpenCV's 15 MB in a bulk thumbnail process; large outputs with small shrinks keep OpenCV (`OPENCV_MIN_PIXELS`). The
DCT and upsampling stay libjpeg-turbo's accurate ones, so without a resize the pixels are exactly Pillow's and
libvips' decode.

Taken only where it gives the same answer as the libvips path: a baseline or progressive JPEG (not MPO) in RGB or
greyscale, no colour transform needed (no profile, or sRGB, or `icc=keep`), no IPTC block (the metadata this
path carries over is EXIF, XMP and the ICC profile), and a decode (at the scale the output needs) within the
full-decode pixel budget. Everything else goes through `thumbnail`, which streams.
"""

import pyvips
from PIL import Image

from pipelines.convert.pillow_input import from_upright_pixels
from pipelines.jpeg_markers import decode_jpeg_checked
from pipelines.orientation import SWAPS_AXES, upright_array

# Large outputs left with a small shrink (a camera photo to 2048 px: 1.05-1.25 after the scaled decode) are resized
# by OpenCV's bilinear filter, 5x faster than libvips' there (2520x1890 -> 2048x1536: 2.8 vs 15 ms, ~4 % of a WebP
# conversion) and as close to a Lanczos resize of the full decode at such shrinks (below a shrink of 1.5 its
# two-pixel kernel covers every source pixel; near 2 it skips pixels: 2.4 dB worse at 1.97). Everything else goes
# through libvips' cubic resize, which costs under 0.5 ms at thumbnail sizes, so thumbnails never load OpenCV.
LINEAR_MAX_SHRINK = 1.5
OPENCV_MIN_PIXELS = 1_000_000


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
    shrink = pixels.shape[1] / width
    if 1.0 < shrink <= LINEAR_MAX_SHRINK and width * height >= OPENCV_MIN_PIXELS:
        import cv2  # only here: 15 MB that thumbnails and small outputs never load

        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_LINEAR)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    image = from_upright_pixels(pixels, "b-w" if grey else "srgb", header)
    if image.width != width or image.height != height:
        image = image.resize(width / image.width, vscale=height / image.height, kernel="cubic")
    return image
