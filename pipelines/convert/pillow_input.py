"""Inputs libvips cannot read in this install: BMP (no loader in the libvips wheel) and HEIF/HEIC (no HEVC decoder).

Pillow decodes them (pillow-heif for HEIF; `pipelines.decode` registers it), turns them upright and hands the pixels
to libvips, which resizes (Lanczos, as `thumbnail` does) and encodes like any other input. Both formats are decoded
at full size, within the decode stage's full-decode pixel budget (checked by `open_validated` before this runs), then
shrunk in Pillow (box filter, to twice the output size) before the pixels are copied for libvips.
"""

import numpy as np
import pyvips
from PIL import Image

from pipelines.errors import InvalidImageError
from pipelines.image_header import upright_image

PILLOW_INPUTS = frozenset({"BMP", "HEIF"})


# Pillow's reduce() leaves at least this many times the output size for the Lanczos resize (as `thumbnail`'s gap)
REDUCING_GAP = 2


def _pixels(image: Image.Image, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """(HxWxC uint8 pixels, libvips interpretation), box-reduced towards `size` (the output's) first: copies of the
    full image (the conversion to RGB and numpy's) took 10 bytes a pixel, 420 MB for a 330 KB RLE BMP of 40 MP."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")  # scaled, not clipped (as the decode stage does)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    factor = int(min(image.width / size[0], image.height / size[1]) / REDUCING_GAP)
    if factor >= 2:
        image = image.reduce(factor)
    array = np.asarray(image)
    return (array[:, :, None] if array.ndim == 2 else array), ("b-w" if image.mode in ("L", "LA") else "srgb")


def from_upright_pixels(
    pixels: np.ndarray, interpretation: str, header: Image.Image, keys: tuple[str, ...] = ("exif", "xmp", "icc_profile")
) -> pyvips.Image:
    """A libvips image of HxWxC upright pixels carrying the header's metadata blobs named by `keys` (Pillow's info
    keys) and orientation 1 (the pixels are upright already)."""
    image = pyvips.Image.new_from_array(np.ascontiguousarray(pixels)).copy(interpretation=interpretation)
    fields = {"exif": "exif-data", "xmp": "xmp-data", "icc_profile": "icc-profile-data"}
    for key in keys:
        blob = header.info.get(key)
        if isinstance(blob, bytes) and blob:
            if key == "exif" and blob[:4] != b"Exif":
                blob = b"Exif\x00\x00" + blob  # libvips keeps the APP1 identifier in its EXIF blob
            image.set_type(pyvips.GValue.blob_type, fields[key], blob)
    image.set_type(pyvips.GValue.gint_type, "orientation", 1)
    return image


def load_with_pillow(header: Image.Image, orientation: int, size: tuple[int, int]) -> pyvips.Image:
    """The image upright at `size` (width, height), with its EXIF and ICC profile and orientation 1."""
    try:
        pixels, interpretation = _pixels(upright_image(header, orientation), size)
    except (OSError, SyntaxError, EOFError, ValueError) as exc:
        raise InvalidImageError(f"image data is corrupt or truncated: {type(exc).__name__}: {exc}") from None
    image = from_upright_pixels(pixels, interpretation, header, keys=("exif", "icc_profile"))
    width, height = size
    if (image.width, image.height) != (width, height):
        image = image.resize(width / image.width, vscale=height / image.height, kernel="lanczos3")
    return image
