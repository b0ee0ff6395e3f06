"""Tone and colour statistics of the working image: exposure, contrast, information, saturation, cast.

Luma is OpenCV's Rec.601 gray scaled to [0, 1]; Lab is CIE L*a*b* (D65) from OpenCV's float conversion,
L* in [0, 100] and a*, b* roughly in [-128, 127].
"""

from dataclasses import dataclass

import cv2
import numpy as np

CRUSHED_LEVEL = 5 / 255  # luma at or below: shadow detail lost
BLOWN_LEVEL = 250 / 255  # luma at or above: highlight detail lost
DARK_VALUE = 0.1  # HSV value below which hue/saturation are meaningless and skipped
NEUTRAL_SHARE = 0.25  # share of (mid-tone) pixels, least chromatic first, that should be neutral grey


@dataclass(frozen=True)
class ToneMeasures:
    """Exposure, contrast and information measures; see `QualityMetrics` for units."""

    brightness_mean: float
    brightness_p05: float
    brightness_p50: float
    brightness_p95: float
    crushed_fraction: float
    blown_fraction: float
    contrast_rms: float
    contrast_spread: float
    entropy_bits: float


@dataclass(frozen=True)
class ColourMeasures:
    """Saturation, colourfulness and colour-cast measures; see `QualityMetrics` for units."""

    saturation_mean: float
    saturation_p95: float
    colourfulness: float
    mean_a: float
    mean_b: float
    cast_a: float
    cast_b: float
    cast_strength: float
    cast_ratio: float
    chroma_p99: float
    channel_offset_rg: float
    channel_offset_bg: float


def measure_tone(gray_u8: np.ndarray) -> ToneMeasures:
    """Brightness, clipping, contrast and entropy of an 8-bit luma image."""
    hist = np.bincount(gray_u8.ravel(), minlength=256).astype(np.float64)
    p = hist / hist.sum()
    cdf = np.cumsum(p)
    levels = np.arange(256) / 255.0

    def percentile(q: float) -> float:
        return float(np.searchsorted(cdf, q) / 255.0)

    mean = float((p * levels).sum())
    nonzero = p[p > 0]
    return ToneMeasures(
        brightness_mean=mean,
        brightness_p05=percentile(0.05),
        brightness_p50=percentile(0.50),
        brightness_p95=percentile(0.95),
        crushed_fraction=float(p[levels <= CRUSHED_LEVEL].sum()),
        blown_fraction=float(p[levels >= BLOWN_LEVEL].sum()),
        contrast_rms=float(np.sqrt((p * (levels - mean) ** 2).sum())),
        contrast_spread=percentile(0.95) - percentile(0.05),
        entropy_bits=float(-(nonzero * np.log2(nonzero)).sum()),
    )


def neutral_cast(lightness: np.ndarray, a: np.ndarray, b: np.ndarray, chroma: np.ndarray) -> tuple[float, float]:
    """Mean (a*, b*) of the least chromatic mid-tone pixels: the surfaces that should be grey.

    A real scene colour (grass, sky) leaves grey things grey; a cast shifts them all. Shadows and
    clipped highlights are skipped: their chroma is noise or clipping, not the light's colour.
    """
    mid = (lightness > 15.0) & (lightness < 95.0)
    if mid.sum() < 64:
        mid = np.ones_like(mid)
    c = chroma[mid]
    keep = c <= np.percentile(c, NEUTRAL_SHARE * 100)
    return float(a[mid][keep].mean()), float(b[mid][keep].mean())


def _saturation(hsv: np.ndarray) -> tuple[float, float]:
    """(mean, 95th percentile) of the 0..1 saturation of lit pixels, from the histogram of the 8-bit values: the same
    numbers as `np.mean` / `np.percentile` (linear interpolation) on the pixels, without sorting them."""
    lit = hsv[..., 2] >= DARK_VALUE * 255
    counts = np.bincount(hsv[..., 1][lit], minlength=256)
    n = int(counts.sum())
    if n == 0:
        return 0.0, 0.0
    levels = np.arange(256) / 255.0
    mean = float((counts * levels).sum() / n)
    rank = (n - 1) * 0.95  # position in the sorted values, as np.percentile's default "linear" method
    below = int(np.floor(rank))
    cdf = np.cumsum(counts)
    lo = levels[np.searchsorted(cdf, below + 1)]
    hi = levels[np.searchsorted(cdf, min(below + 2, n))]
    return mean, float(lo + (hi - lo) * (rank - below))


def measure_colour(rgb: np.ndarray) -> ColourMeasures:
    """Saturation, colourfulness and cast of an RGB uint8 image."""
    saturation_mean, saturation_p95 = _saturation(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))

    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    # Hasler & Suesstrunk (2003), 0-255 units: ~15 "slightly colourful" .. ~110 "extremely colourful".
    colourfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))

    lab = cv2.cvtColor(x / 255.0, cv2.COLOR_RGB2Lab)
    a, bb = lab[..., 1], lab[..., 2]
    chroma = np.hypot(a, bb)
    mean_a, mean_b = float(a.mean()), float(bb.mean())
    cast_a, cast_b = neutral_cast(lab[..., 0], a, bb, chroma)
    return ColourMeasures(
        saturation_mean=saturation_mean,
        saturation_p95=saturation_p95,
        colourfulness=colourfulness,
        mean_a=mean_a,
        mean_b=mean_b,
        cast_a=cast_a,
        cast_b=cast_b,
        cast_strength=float(np.hypot(cast_a, cast_b)),
        # Gasparini & Schettini (2004): a global cast is a mean chroma offset that is large next to the
        # spread of chroma; a scene full of one real colour has a large spread too.
        cast_ratio=float(np.hypot(mean_a, mean_b)) / max(float(np.hypot(a.std(), bb.std())), 1.0),
        chroma_p99=float(np.percentile(chroma, 99)),
        channel_offset_rg=float((r - g).mean()),
        channel_offset_bg=float((b - g).mean()),
    )
