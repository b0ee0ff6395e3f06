"""Noise level and JPEG blockiness.

Noise: Immerkaer's fast noise variance estimator (1996) -- the image is filtered with a mask that
cancels locally linear signal, so what remains is mostly noise; sigma = sqrt(pi/2) * mean|residual| / 6.
Scene texture leaks into the residual too, so it is computed per small tile and the *low* percentile
of the tiles is taken (noise is everywhere, texture is not), tiles at the clipping limits are skipped
(clipping removes noise), and the texture left is cancelled by comparing two scales (`noise_sigma`).

Blockiness: JPEG quantises 8x8 blocks independently, which leaves steps on the block boundaries. The
measure is the mean |difference| across columns/rows at the 8-px period's boundary phase divided by the
mean at the other phases (1.0 = no grid). The phase is searched, so the crop may start anywhere. A grid is steps at
many boundaries: one or a few edges that happen to fall on the 8-px period (a rectangle drawn in a lossless graphic)
give a large ratio from a few columns alone, so the ratio counts only when, in one direction at least, some phase has
a step above the rest of its block at `GRID_MIN_SHARE` of the blocks (`has_block_grid`); otherwise it is 1.0.
"""

import cv2
import numpy as np

NOISE_TILE = 16  # px of the working image
NOISE_PERCENTILE = 10.0
JPEG_BLOCK = 8
# Grey levels added to both sides of the blockiness ratio: steps of a fraction of a level are invisible, yet in a
# flat crop (clear sky, an enlarged or blurred photo) they make a large ratio of two tiny numbers. Chosen on
# training copies at 0.25-12 MP (tooling.quality.native_thresholds): 0.5 keeps clean and blurred crops below 1.3 at
# every size while JPEG quality 15 stays above 1.5; it was 0.05, which only guarded against division by zero.
BLOCK_VISIBILITY = 0.5
# A JPEG grid steps at most block boundaries; one or a few aligned edges of a flat graphic at a few. On the BIQ2021
# training part (1,600 photos as stored and re-encoded at JPEG quality 10-30, 256-px crops: 31 blocks a direction)
# the best phase of the better direction steps at >= 0.32 of the blocks; a drawn rectangle at 0.06.
GRID_MIN_SHARE = 0.2
GRID_MIN_STEPS = 3  # and at least this many boundaries, whatever the crop's size
IMPULSE_JUMP = 60  # gray levels a pixel must stand above (or below) all 8 neighbours to count as an impulse
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_SIGMA_PER_MEAN_ABS = float(np.sqrt(np.pi / 2.0) / 6.0)


def _tile_means(m: np.ndarray, tile: int) -> np.ndarray:
    th, tw = m.shape[0] // tile, m.shape[1] // tile
    if th == 0 or tw == 0:
        return np.array([m.mean()], np.float32)
    # cv2's area resize by an integer factor is the tile mean, in one C pass (~3x numpy's reshape-mean)
    return cv2.resize(m[: th * tile, : tw * tile], (tw, th), interpolation=cv2.INTER_AREA).ravel()


def residual_sigma(channel: np.ndarray, tile: int = NOISE_TILE) -> float:
    """Immerkaer sigma (0-255 units) of the flattest unclipped tiles of one float32 channel."""
    if min(channel.shape) < 3:
        return 0.0
    residual = cv2.filter2D(channel, cv2.CV_32F, _IMMERKAER)[1:-1, 1:-1]
    np.abs(residual, out=residual)
    sigma = _tile_means(residual, tile) * _SIGMA_PER_MEAN_ABS
    level = _tile_means(channel[1:-1, 1:-1], tile)
    usable = (level > 8.0) & (level < 247.0)
    if usable.sum() >= 4:
        sigma = sigma[usable]
    return float(np.percentile(sigma, NOISE_PERCENTILE))


def noise_sigma(channel: np.ndarray) -> float:
    """Noise standard deviation of one float32 channel in 0-255 units.

    Two scales: averaging 2x2 pixels halves white noise but leaves natural texture (whose energy is
    roughly the same at every scale) as it was. With s1, s2 the residual sigmas at full and half scale,
    s1^2 = n^2 + t^2 and s2^2 = n^2 / 4 + t^2, so n^2 = 4/3 (s1^2 - s2^2).
    """
    full = residual_sigma(channel)
    h, w = channel.shape[0] // 2, channel.shape[1] // 2
    if min(h, w) < 3:
        return full
    half = residual_sigma(cv2.resize(channel, (w, h), interpolation=cv2.INTER_AREA), NOISE_TILE // 2)
    return float(np.sqrt(max(0.0, full * full - half * half) * 4.0 / 3.0))


def chroma_noise_sigma(rgb: np.ndarray) -> float:
    """Noise sigma of the Cr/Cb chroma channels (0-255 units), the larger of the two."""
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    return max(noise_sigma(ycc[..., 1]), noise_sigma(ycc[..., 2]))


def impulse_fraction(gray_u8: np.ndarray) -> float:
    """Fraction of isolated spikes: pixels `IMPULSE_JUMP` levels brighter or darker than all 8 neighbours."""
    if min(gray_u8.shape) < 3:
        return 0.0
    ring = np.ones((3, 3), np.uint8)
    ring[1, 1] = 0
    g = gray_u8.astype(np.int16)
    brightest = cv2.dilate(gray_u8, ring).astype(np.int16)
    darkest = cv2.erode(gray_u8, ring).astype(np.int16)
    spikes = (g - brightest > IMPULSE_JUMP) | (darkest - g > IMPULSE_JUMP)
    return float(np.mean(spikes[1:-1, 1:-1]))


def _grid_ratio(step: np.ndarray, period: int) -> float:
    """step: mean |difference| between neighbouring columns; max over phases of boundary / other phases."""
    usable = (step.size // period) * period
    if usable < 4 * period:
        return 1.0
    by_phase = step[:usable].reshape(-1, period).mean(axis=0)
    best = int(np.argmax(by_phase))
    others = np.delete(by_phase, best).mean()
    return float((by_phase[best] + BLOCK_VISIBILITY) / (others + BLOCK_VISIBILITY))


def _stepped_blocks(step: np.ndarray, period: int) -> tuple[int, int]:
    """(most blocks at one phase whose step exceeds the mean step of the block's other columns, number of blocks).

    Strictly exceeds: in a flat area (a lossless graphic) every step is 0 and no boundary counts."""
    blocks = step[: (step.size // period) * period].reshape(-1, period)
    if blocks.shape[0] == 0:
        return 0, 0
    inside = (blocks.sum(axis=1, keepdims=True) - blocks) / (period - 1)
    return int((blocks > inside).sum(axis=0).max()), blocks.shape[0]


def has_block_grid(cols: np.ndarray, rows: np.ndarray, period: int = JPEG_BLOCK) -> bool:
    """Whether the column/row steps show a grid: in one direction at least, one phase steps at `GRID_MIN_SHARE` of
    the blocks (and at `GRID_MIN_STEPS`), rather than at the few boundaries where edges of the picture fell."""
    for step in (cols, rows):
        stepped, blocks = _stepped_blocks(step, period)
        if stepped >= max(GRID_MIN_STEPS, GRID_MIN_SHARE * blocks):
            return True
    return False


def blockiness(gray_u8: np.ndarray) -> float:
    """JPEG block-grid strength of a gray crop at the resolution the file was encoded at (1.0 = none or no grid)."""
    g = gray_u8.astype(np.float32)
    cols = np.abs(np.diff(g, axis=1)).mean(axis=0)
    rows = np.abs(np.diff(g, axis=0)).mean(axis=1)
    if not has_block_grid(cols, rows):
        return 1.0
    return (_grid_ratio(cols, JPEG_BLOCK) + _grid_ratio(rows, JPEG_BLOCK)) / 2.0
