"""Colour statistics of a thumbnail: palette, dominant and mean colour, colourfulness, alpha coverage.

The palette is weighted k-means (k-means++ seeding with a fixed seed, so results are reproducible) over the
distinct colours of the visible pixels only (alpha >= 128), so transparent areas do not vote.
Colourfulness is Hasler & Suesstrunk (2003):
M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2), rg = R - G, yb = (R + G) / 2 - B.
"""

import numpy as np
from PIL import Image

from pipelines.metadata.result import AlphaStats, ColorInfo, Swatch

PALETTE_SIZE = 8
KMEANS_ITERATIONS = 12
VISIBLE_ALPHA = 128


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _sq_distances(colors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, K) squared distances up to a per-row constant: |c|^2 - 2 x.c (one matrix product)."""
    return (centres**2).sum(axis=1)[None, :] - 2.0 * colors @ centres.T


def _binned(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour and pixel count of each occupied 5-bit-per-channel bin: far fewer points, same centroids."""
    bins = (
        ((pixels[:, 0] >> 3).astype(np.int32) << 10) | ((pixels[:, 1] >> 3).astype(np.int32) << 5) | (pixels[:, 2] >> 3)
    )
    _, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inverse, weights=pixels[:, c], minlength=len(counts)) for c in range(3)], axis=1)
    return sums / counts[:, None], counts.astype(np.float64)


def _kmeans(colors: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted k-means over distinct colours: (centres (k, 3), weight per centre). Deterministic (fixed seed)."""
    rng = np.random.default_rng(0)
    centre = np.empty((k, 3))
    centre[0] = colors[rng.choice(len(colors), p=weights / weights.sum())]
    norms = (colors**2).sum(axis=1)
    nearest = norms + _sq_distances(colors, centre[:1])[:, 0]
    found = 1
    while found < k:  # k-means++ seeding
        mass = weights * np.maximum(nearest, 0.0)
        if mass.sum() <= 0:
            break
        centre[found] = colors[rng.choice(len(colors), p=mass / mass.sum())]
        nearest = np.minimum(nearest, norms + _sq_distances(colors, centre[found : found + 1])[:, 0])
        found += 1
    centre = centre[:found]
    assign = np.full(len(colors), -1)
    for _ in range(KMEANS_ITERATIONS):
        new_assign = _sq_distances(colors, centre).argmin(axis=1)
        if np.array_equal(new_assign, assign):
            break
        assign = new_assign
        mass = np.bincount(assign, weights=weights, minlength=found)
        for channel in range(3):
            sums = np.bincount(assign, weights=weights * colors[:, channel], minlength=found)
            np.divide(sums, mass, out=centre[:, channel], where=mass > 0)
    return centre, np.bincount(assign, weights=weights, minlength=found)


def palette(pixels: np.ndarray, size: int = PALETTE_SIZE) -> tuple[Swatch, ...]:
    """Up to `size` swatches for an (N, 3) uint8 array, largest share first."""
    if len(pixels) == 0:
        return ()
    colors, counts = _binned(pixels)
    centres, mass = _kmeans(colors, counts, min(size, len(counts)))
    total = float(len(pixels))
    swatches = []
    for index in np.argsort(-mass, kind="stable"):
        if mass[index] <= 0:
            continue
        rgb = tuple(int(v) for v in np.clip(np.rint(centres[index]), 0, 255))
        swatches.append(Swatch(rgb=rgb, hex=_hex(rgb), fraction=round(float(mass[index]) / total, 4)))  # type: ignore[arg-type]
    return tuple(swatches)


def colorfulness(pixels: np.ndarray) -> float:
    """Hasler & Suesstrunk colourfulness of (N, 3) RGB values on the 0..255 scale."""
    rgb = pixels.astype(np.float64)
    rg = rgb[:, 0] - rgb[:, 1]
    yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    spread = np.hypot(rg.std(), yb.std())
    offset = np.hypot(rg.mean(), yb.mean())
    return round(float(spread + 0.3 * offset), 3)


def alpha_stats(alpha: np.ndarray) -> AlphaStats:
    """Coverage of an alpha channel (uint8 values)."""
    count = float(alpha.size)
    return AlphaStats(
        transparent_fraction=round(float(np.count_nonzero(alpha == 0)) / count, 4),
        translucent_fraction=round(float(np.count_nonzero((alpha > 0) & (alpha < 255))) / count, 4),
        mean_alpha=round(float(alpha.mean()) / 255.0, 4),
    )


def color_info(image: Image.Image, srgb: bool = True) -> ColorInfo:
    """`ColorInfo` of an RGB or RGBA image (already small: this works on every pixel)."""
    array = np.asarray(image.convert("RGBA" if image.mode == "RGBA" else "RGB"))
    flat = array.reshape(-1, array.shape[-1])
    alpha = flat[:, 3] if flat.shape[1] == 4 else None
    visible = flat[alpha >= VISIBLE_ALPHA, :3] if alpha is not None else flat
    swatches = palette(np.ascontiguousarray(visible))
    mean = tuple(int(v) for v in np.rint(visible.mean(axis=0))) if len(visible) else None
    return ColorInfo(
        dominant=swatches[0] if swatches else None,
        palette=swatches,
        mean_rgb=mean,  # type: ignore[arg-type]
        mean_hex=_hex(mean) if mean else None,  # type: ignore[arg-type]
        colorfulness=colorfulness(visible) if len(visible) else None,
        alpha=alpha_stats(alpha) if alpha is not None else None,
        srgb=srgb,
        sample_size=image.size,
    )
