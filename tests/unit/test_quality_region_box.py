"""The `sharpest_region` box (the evidence `region` of `blurry`, `motion_blur`, `sharp`) is where the sharp tiles
are in the frame, on the served path: a JPEG with an EXIF orientation, decoded at reduced scale by `decode_image`
with the quality stage's working image, then `compute_metrics` (as serving.stages.decode and .quality do)."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.decode import decode_image
from pipelines.quality import compute_metrics
from pipelines.quality.sharpness import TILE
from pipelines.quality.thresholds import default_thresholds
from tests.unit.textures import dead_leaves_texture

pytestmark = pytest.mark.unit

# the only sharp part of the frame, (x0, y0, x1, y1) in 0..1 of the upright photo: towards the bottom right, where
# tiles lie furthest from their index over the grid on a side that is not a multiple of the tile size
SHARP_PATCH = (0.60, 0.58, 0.85, 0.86)
# orientation -> the transpose that stores an upright photo so that this EXIF orientation turns it upright again
STORED_FOR = {
    1: None,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def _sharp_patch_photo(width: int, height: int) -> np.ndarray:
    """A defocused scene (blurred dead leaves, still textured) with a sharp checkerboard in `SHARP_PATCH`."""
    photo = cv2.GaussianBlur(dead_leaves_texture((height, width), seed=2), (0, 0), 0.012 * max(width, height))
    x0, x1 = round(SHARP_PATCH[0] * width), round(SHARP_PATCH[2] * width)
    y0, y1 = round(SHARP_PATCH[1] * height), round(SHARP_PATCH[3] * height)
    cell = max(2, max(width, height) // 170)  # ~3 px of the working image
    yy, xx = np.mgrid[y0:y1, x0:x1]
    photo[y0:y1, x0:x1] = ((yy // cell + xx // cell) % 2 * 200 + 28).astype(np.uint8)[:, :, None]
    return photo


def _jpeg(upright: np.ndarray, orientation: int) -> bytes:
    image = Image.fromarray(upright)
    transpose = STORED_FOR[orientation]
    if transpose is not None:
        image = image.transpose(transpose)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("width", "height", "orientation", "decode_scale"),
    [
        (2000, 1500, 1, 2),  # working 512 x 384: both sides whole tiles
        (1999, 1333, 1, 2),  # working 512 x 342: a partial row of tiles
        (3001, 2003, 6, 4),  # the same at 1/4 scale, stored on its side
        (1234, 987, 3, 2),  # working 512 x 410, upside down
        (700, 1100, 8, 2),  # portrait, working 326 x 512: a partial column
        (511, 383, 1, 1),  # full decode, working image = the photo: partial row and column
    ],
)
def test_the_blur_box_is_where_the_sharp_tiles_are(
    width: int, height: int, orientation: int, decode_scale: int
) -> None:
    decoded = decode_image(
        _jpeg(_sharp_patch_photo(width, height), orientation), {}, None, default_thresholds().working_max_side
    )
    assert (decoded.width, decoded.height, decoded.decode_scale) == (width, height, decode_scale)
    assert decoded.working is not None
    metrics = compute_metrics(decoded.working, (decoded.width, decoded.height), decoded.native_rgb)
    box = metrics.sharpest_region
    work_h, work_w = decoded.working.shape[:2]
    tile = (TILE / work_w, TILE / work_h, TILE / work_w, TILE / work_h)  # one tile, in 0..1 of the frame per edge
    for edge, side in enumerate((work_w, work_h, work_w, work_h)):  # the box is made of whole tiles of the working
        px = box[edge] * side  # image (the 3 decimals of the box are < 0.3 px of it)
        assert abs(px - TILE * round(px / TILE)) < 0.5, (edge, box, px)
    centre = ((SHARP_PATCH[0] + SHARP_PATCH[2]) / 2, (SHARP_PATCH[1] + SHARP_PATCH[3]) / 2)
    assert box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3], (box, centre)
    # every judged tile touches the sharp patch, so each edge of the box is less than a tile outside the patch's
    # (with 1 working px of slack for the resize and the decode's rounding)
    slack = (1 / work_w, 1 / work_h, 1 / work_w, 1 / work_h)
    for edge in range(4):
        outside = SHARP_PATCH[edge] - box[edge] if edge < 2 else box[edge] - SHARP_PATCH[edge]
        assert outside < tile[edge] + slack[edge], (edge, box, SHARP_PATCH)
    overlap_w = min(box[2], SHARP_PATCH[2]) - max(box[0], SHARP_PATCH[0])
    overlap_h = min(box[3], SHARP_PATCH[3]) - max(box[1], SHARP_PATCH[1])
    patch_area = (SHARP_PATCH[2] - SHARP_PATCH[0]) * (SHARP_PATCH[3] - SHARP_PATCH[1])
    assert overlap_w * overlap_h >= 0.6 * patch_area, (box, SHARP_PATCH)  # and it covers most of the patch


def test_a_box_of_the_last_partial_tile_edges_ends_where_that_tile_ends() -> None:
    """The judged tiles of a 511 x 383 working image are whole 32-px tiles: the last ones end at 480 / 352 px, not
    at the frame's edge."""
    photo = cv2.GaussianBlur(dead_leaves_texture((383, 511), seed=4), (0, 0), 6)
    sharp = dead_leaves_texture((383, 511), seed=5)
    photo[320:352, 448:480] = sharp[320:352, 448:480]  # exactly the last whole tile of each axis
    metrics = compute_metrics(photo, (511, 383))
    assert metrics.sharpest_region[2:] == (round(480 / 511, 3), round(352 / 383, 3))
