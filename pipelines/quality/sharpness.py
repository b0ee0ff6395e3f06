"""Sharpness and blur direction on the gray working image (float32, values in [0, 1]).

The main measure is a directional, tile-pooled version of the re-blur "blur effect" of Crete-Roffet et
al. (2007): blur the image again along a direction with a short line kernel and measure how much of the
pixel-to-pixel variation along that direction disappears. A sharp image loses most of it (value near 1),
an already blurred one loses little (near 0). Being a ratio, it does not depend on how much texture or
contrast the scene has, unlike the variance of the Laplacian.

Pooling: the image is cut into tiles; only tiles with enough variation take part, and the sharpness is
that of the sharpest `TOP_FRACTION` of them. A portrait with a sharp face and a defocused background is
sharp; a photo where nothing is in focus is blurry.

Coarse sharpness: the same min-direction measure on the image shrunk to `COARSE_SIDE` px. Detail in the top octave
of the working image depends on how the photo was resampled on the way (a 0.3 MP original and its 12 MP enlargement,
shrunk back, differ there by ~0.03), one octave lower it does not (~0.003, training photos at four sizes): it decides
the positive `sharp` tag, so that the same photo uploaded at another size keeps its verdict (tiles of the same size in
the photo: 16 px at 256 for 32 px at 512).

Direction: the blur 1 - s(theta), measured along 0, 45, 90 and 135 degrees over all textured tiles, is
fitted with a + b*cos(2(theta - phi)). Defocus blurs every direction alike (b ~ 0); motion blur removes
detail along the motion only, so b/a (the anisotropy) is large and phi is the direction of motion.

Thin strips: every measure above is 2-D (9-px re-blur lines along four directions, 32-px tiles). A working image
under `MIN_SIDE` px on its short side (a banner of aspect ratio above ~32:1 at 512 px; a 1-px line of a ~340:1 one)
has no 2-D sharpness to measure: a sharp texture 1-12 px high reads as blurred (0) or smeared along one direction
(anisotropy 0.2-0.5), so the directional measures are None there (no blur or sharp verdict) instead of a number.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.quality.working_image import working_size

TILE = 32  # px of the working image
REBLUR_LENGTH = 9  # px; longer than the blur a sharp working image has, shorter than a blurry one's
MIN_TILE_VARIATION = 0.006  # mean |difference| per px in a tile (gray in [0, 1]) for it to count as textured
TOP_FRACTION = 0.2  # share of textured tiles, sharpest first, that the sharpness is averaged over
COARSE_SIDE = 256  # px, longer side of the image `coarse_sharpness` is measured on (half the working image)
COARSE_TILE = TILE // 2  # the same tiles of the photo, one octave down
MIN_SIDE = TILE // 2  # px: a thinner working image has no 2-D sharpness to measure (module docstring)
_DIRECTIONS = ((0, 1), (1, 1), (1, 0), (1, -1))  # (dy, dx) for 0, 45, 90, 135 degrees


@dataclass(frozen=True)
class SharpnessMeasures:
    """Sharpness measures of one gray working image; see `QualityMetrics` for units."""

    laplacian_var: float
    tenengrad: float
    # None on a strip thinner than MIN_SIDE: nothing 2-D to judge
    sharpness: float | None
    sharpness_min_direction: float | None
    coarse_sharpness: float | None
    blur_anisotropy: float | None
    blur_direction_deg: float | None
    textured_fraction: float
    sharpest_region: tuple[float, float, float, float]  # box (x0, y0, x1, y1), 0..1, of the tiles judged


def _reblur(gray: np.ndarray, dy: int, dx: int, length: int) -> np.ndarray:
    """Mean over a `length`-px line through each pixel along (dy, dx), borders reflected: a 1-D filter (0 and 90
    degrees) or a sum of shifted copies (diagonals), the same values up to float rounding as `cv2.filter2D` with a
    `length` x `length` line kernel, ~5x faster."""
    if dy == 0 or dx == 0:
        kernel = np.full((1, length) if dy == 0 else (length, 1), 1.0 / length, np.float32)
        return cv2.filter2D(gray, -1, kernel, borderType=cv2.BORDER_REFLECT)
    c = length // 2
    h, w = gray.shape
    padded = cv2.copyMakeBorder(gray, c, c, c, c, cv2.BORDER_REFLECT)
    out = np.zeros_like(gray)
    for t in range(-c, c + 1):
        out += padded[c + t * dy : c + t * dy + h, c + t * dx : c + t * dx + w]
    return out * np.float32(1.0 / length)


def _abs_step(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """|a(y+dy, x+dx) - a(y, x)| with zeros where the neighbour falls outside."""
    out = np.zeros_like(a)
    h, w = a.shape
    y0, y1 = max(0, -dy), h - max(0, dy)
    x0, x1 = max(0, -dx), w - max(0, dx)
    out[y0:y1, x0:x1] = cv2.absdiff(a[y0 + dy : y1 + dy, x0 + dx : x1 + dx], a[y0:y1, x0:x1])
    return out


def _tile_sums(m: np.ndarray, tile: int) -> np.ndarray:
    """Sum over each full tile (a partial last row/column of tiles is dropped), float64."""
    th, tw = max(1, m.shape[0] // tile), max(1, m.shape[1] // tile)
    ty, tx = min(tile, m.shape[0]), min(tile, m.shape[1])
    # cv2's area resize by an integer factor is the tile mean, in one C pass (numpy's reshape-sum is ~3x slower)
    means = cv2.resize(m[: th * ty, : tw * tx], (tw, th), interpolation=cv2.INTER_AREA)
    return means.reshape(th, tw).astype(np.float64) * (ty * tx)


Region = tuple[float, float, float, float]
WHOLE_FRAME: Region = (0.0, 0.0, 1.0, 1.0)


def _tiles_box(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, ...], tile: int) -> Region:
    """Bounding box, as fractions of an image of `shape` (h, w), of the `_tile_sums` tiles at (rows, cols).

    A tile's edges are its pixel edges over the image's size, not its index over the grid's: the grid covers only
    the full tiles (a partial last row/column is dropped), so on a side that is not a multiple of `tile` the grid
    is shorter than the image and index fractions would stretch it over the whole frame (up to a tile off)."""
    h, w = shape
    ty, tx = min(tile, h), min(tile, w)
    return (
        round(float(cols.min()) * tx / w, 3),
        round(float(rows.min()) * ty / h, 3),
        round(float(cols.max() + 1) * tx / w, 3),
        round(float(rows.max() + 1) * ty / h, 3),
    )


def directional_sharpness(gray: np.ndarray, tile: int = TILE) -> tuple[np.ndarray, np.ndarray, float, Region]:
    """Sharpness along 0/45/90/135 degrees: (sharpest tiles, all textured tiles, fraction of textured tiles,
    bounding box of the sharpest tiles: where the verdict was measured), over `tile`-px tiles."""
    kept, lost = [], []
    for dy, dx in _DIRECTIONS:
        reblurred = _reblur(gray, dy, dx, REBLUR_LENGTH)
        step = _abs_step(gray, dy, dx)
        lost.append(_tile_sums(cv2.max(cv2.subtract(step, _abs_step(reblurred, dy, dx)), 0.0), tile))
        kept.append(_tile_sums(step, tile))
    variation = np.stack(kept)  # 4 x tiles_y x tiles_x
    removed = np.stack(lost)
    tile_px = min(tile, gray.shape[0]) * min(tile, gray.shape[1])
    textured = variation.mean(axis=0) / tile_px > MIN_TILE_VARIATION
    textured_fraction = float(textured.mean())
    if not textured.any():  # nothing to judge: pool over the whole image
        whole = removed.sum(axis=(1, 2)) / np.maximum(variation.sum(axis=(1, 2)), 1e-9)
        return whole, whole, textured_fraction, WHOLE_FRAME
    per_tile = removed[:, textured] / np.maximum(variation[:, textured], 1e-9)  # 4 x n
    order = np.argsort(per_tile.mean(axis=0))[::-1]
    top = order[: max(1, int(np.ceil(TOP_FRACTION * order.size)))]
    rows, cols = np.nonzero(textured)
    region = _tiles_box(rows[top], cols[top], gray.shape, tile)
    return per_tile[:, top].mean(axis=1), per_tile.mean(axis=1), textured_fraction, region


def measure_sharpness(gray: np.ndarray) -> SharpnessMeasures:
    """All sharpness measures of a float32 gray working image in [0, 1] (directional ones None on a thin strip)."""
    laplacian = cv2.Laplacian(gray, cv2.CV_32F, ksize=1)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    if min(gray.shape) < MIN_SIDE:
        return SharpnessMeasures(
            laplacian_var=float(laplacian.var()),
            tenengrad=float(np.mean(gx * gx + gy * gy)),
            sharpness=None,
            sharpness_min_direction=None,
            coarse_sharpness=None,
            blur_anisotropy=None,
            blur_direction_deg=None,
            textured_fraction=0.0,
            sharpest_region=WHOLE_FRAME,
        )
    s, s_all, textured_fraction, region = directional_sharpness(gray)
    size = working_size(gray.shape[1], gray.shape[0], COARSE_SIDE)
    coarse = gray if size == gray.shape[::-1] else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    # Direction is judged on the blur (1 - sharpness) over all textured tiles: camera motion blurs the
    # whole frame alike, and relative to the blur amount a strong defocus stays isotropic.
    blur = 1.0 - s_all
    cos_part, sin_part = (blur[0] - blur[2]) / 2.0, (blur[1] - blur[3]) / 2.0
    amplitude = float(np.hypot(cos_part, sin_part))
    direction = (np.degrees(np.arctan2(sin_part, cos_part)) / 2.0) % 180.0  # where the blur peaks
    return SharpnessMeasures(
        laplacian_var=float(laplacian.var()),
        tenengrad=float(np.mean(gx * gx + gy * gy)),
        sharpness=float(s.mean()),
        sharpness_min_direction=float(s.min()),
        coarse_sharpness=float(directional_sharpness(coarse, COARSE_TILE)[0].min()),
        blur_anisotropy=amplitude / max(float(blur.mean()), 1e-9),
        blur_direction_deg=float(direction),
        textured_fraction=textured_fraction,
        sharpest_region=region,
    )
