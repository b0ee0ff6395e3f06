"""Full-size decodes (every format but a JPEG decoded at reduced scale) turned into upright RGB with one full-size
array besides the decoder's own buffer, converting a strip (a band of rows, or of columns where the image turns) at
a time.

The whole-image route took ~10 bytes a pixel over the decoder's buffer (~400 MB at 40 MP): each mode conversion
(RGBA on white, 16-bit to 8-bit, palette to RGB) and each EXIF turn made a full-size copy, and `np.asarray` of a
Pillow image goes through `tobytes()`, which holds the pixels twice (its chunks and their join) on top of Pillow's
4 bytes a pixel. Here the decoder's pixels are converted strip by strip into one HxWx3 array (turned upright on the
way, through a view), the decoder's buffer is released, and the Pillow RGB image the geometry needs is made from
the array: at most the decoder's buffer or Pillow's RGB image plus the array, ~7 bytes a pixel (measured figures:
`pipelines.limits.DecodeLimits.max_full_decode_pixels`). The pixels are those of the whole-image route.

WebP goes through libwebp's own decoder (OpenCV's `imdecode`, the same libwebp output): Pillow's holds the
animation decoder's canvases, a bytes copy and its image at once, 16 bytes a pixel before any conversion.
"""

from collections.abc import Callable, Iterator

import cv2
import numpy as np
from PIL import Image

from pipelines.orientation import SWAPS_AXES, UPRIGHT_TRANSPOSE
from pipelines.pixel_modes import TOP_SCALED_MODES, is_plain_rgb, largest_grey_value, tiff_sample_type, to_rgb

STRIP_PIXELS = 1 << 18  # pixels converted at a time: ~6 MB of temporaries (an RGBA strip on white), 153 strips at 40 MP
Box = tuple[int, int, int, int]  # (left, top, right, bottom), as Pillow's crop takes it
RGBStrip = Callable[[Box], Image.Image]  # a box of the stored pixels -> those pixels as an RGB image


def strips(width: int, height: int, columns: bool = False) -> Iterator[Box]:
    """Boxes of about `STRIP_PIXELS` pixels each covering a `width` x `height` image: bands of rows, or of columns."""
    if columns:
        step = max(1, STRIP_PIXELS // max(1, height))
        for left in range(0, width, step):
            yield left, 0, min(width, left + step), height
        return
    step = max(1, STRIP_PIXELS // max(1, width))
    for top in range(0, height, step):
        yield 0, top, width, min(height, top + step)


def stored_view(upright: np.ndarray, orientation: int) -> np.ndarray:
    """A view of an upright HxW(xC) array in the file's stored geometry: stored pixels written into it land upright
    (the inverse of `pipelines.orientation.upright_array`: each flip and the transpose undo themselves)."""
    view = upright
    if orientation in SWAPS_AXES:  # upright_array transposes, then flips the transposed axes: undo the flips first
        flips_x, flips_y = orientation in (6, 7), orientation in (7, 8)
    else:
        flips_x, flips_y = orientation in (2, 3), orientation in (3, 4)
    if flips_x:
        view = view[:, ::-1]
    if flips_y:
        view = view[::-1]
    return np.swapaxes(view, 0, 1) if orientation in SWAPS_AXES else view


def rgb_array(image: Image.Image) -> np.ndarray:
    """HxWx3 uint8 copy of an RGB image, a strip at a time (`np.asarray` alone would hold two more copies)."""
    width, height = image.size
    if height * width <= STRIP_PIXELS:
        return np.asarray(image, dtype=np.uint8)
    out = np.empty((height, width, 3), np.uint8)
    for box in strips(width, height):
        out[box[1] : box[3]] = np.asarray(image.crop(box), dtype=np.uint8)
    return out


def upright_rgb_array(stored_size: tuple[int, int], orientation: int, rgb_strip: RGBStrip) -> np.ndarray:
    """The upright HxWx3 uint8 image of `stored_size` (width, height), filled from `rgb_strip` a strip at a time."""
    width, height = stored_size
    out = np.empty((width, height, 3) if orientation in SWAPS_AXES else (height, width, 3), np.uint8)
    stored = stored_view(out, orientation)
    # where the axes swap, a band of stored columns is a band of upright rows: written in memory order
    for left, top, right, bottom in strips(width, height, columns=orientation in SWAPS_AXES):
        stored[top:bottom, left:right] = np.asarray(rgb_strip((left, top, right, bottom)), dtype=np.uint8)
    return out


def webp_pixels(data: bytes) -> np.ndarray | None:
    """A one-frame WebP's stored pixels as HxWx3 BGR or HxWx4 BGRA (OpenCV's order), by libwebp through OpenCV; None
    where OpenCV does not decode it."""
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        return None
    return pixels


def load_full_size(image: Image.Image, data: bytes, orientation: int) -> tuple[Image.Image, np.ndarray | None]:
    """Decode `image` (opened from `data`, not yet loaded) at full size: (the upright RGB image, its pixels as an
    HxWx3 uint8 array, or None where the decoded image was already upright RGB: `rgb_array` makes them). `image` is
    closed where its pixels were converted (its memory released)."""
    stored_size = image.size
    if image.format == "WEBP" and getattr(image, "n_frames", 1) == 1:
        decoded = webp_pixels(data)
        if decoded is not None:  # else Pillow decodes it (or says what is wrong with it)
            mode, code = ("RGBA", cv2.COLOR_BGRA2RGBA) if decoded.shape[2] == 4 else ("RGB", cv2.COLOR_BGR2RGB)
            image.close()

            def webp_strip(box: Box) -> Image.Image:  # colours swapped a strip at a time: cv2 in place copies it all
                left, top, right, bottom = box
                return to_rgb(Image.fromarray(cv2.cvtColor(decoded[top:bottom, left:right], code), mode))

            pixels = upright_rgb_array(stored_size, orientation, webp_strip)
            del decoded
            return Image.fromarray(pixels), pixels
    image.load()
    if image.format == "TIFF":  # Pillow's TIFF plugin turns the pixels upright as it loads them (and drops the tag)
        orientation, stored_size = 1, image.size
    if orientation not in UPRIGHT_TRANSPOSE and is_plain_rgb(image):
        return image, None
    sample = tiff_sample_type(image)
    top = largest_grey_value(image, sample) if image.mode in TOP_SCALED_MODES else None
    pixels = upright_rgb_array(stored_size, orientation, lambda box: to_rgb(image.crop(box), sample, top))
    image.close()
    return Image.fromarray(pixels), pixels
