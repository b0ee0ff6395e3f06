"""EXIF orientation (tag 0x0112, values 1-8): how the stored pixels are turned upright, shared by every decoder."""

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
