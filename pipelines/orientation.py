"""EXIF orientation (tag 0x0112, values 1-8): how the stored pixels are turned upright, shared by every decoder."""

import numpy as np
from PIL import Image

# orientation -> the Pillow transpose that makes the stored pixels upright (as ImageOps.exif_transpose does)
UPRIGHT_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_AXES = frozenset({5, 6, 7, 8})  # orientations whose upright width is the stored height
FLIPS_STORED_X = frozenset({2, 3, 7, 8})  # orientations that reverse the stored x axis on the way upright
FLIPS_STORED_Y = frozenset({3, 4, 6, 7})  # ... and the stored y axis


def upright_array(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """HxW(xC) stored pixels turned upright, as `UPRIGHT_TRANSPOSE` turns a Pillow image (a view where possible)."""
    import numpy as np

    if orientation in SWAPS_AXES:
        pixels = np.swapaxes(pixels, 0, 1)  # TRANSPOSE; the flips below make ROTATE_270 / TRANSVERSE / ROTATE_90
        flips_x, flips_y = orientation in (6, 7), orientation in (7, 8)
    else:
        flips_x, flips_y = orientation in FLIPS_STORED_X, orientation in FLIPS_STORED_Y
    if flips_x:
        pixels = pixels[:, ::-1]
    if flips_y:
        pixels = pixels[::-1]
    return pixels
