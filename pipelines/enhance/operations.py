"""Enhancement operations: HxWx3 uint8 RGB in, HxWx3 uint8 RGB out, no side effects.

Tone operations work on luma and scale the three channels together (hues stay), colour operations in CIE Lab;
statistics are taken on a reduced copy (`_stats_view`), so a 24 MP photo costs one pass per operation, not a
percentile sort of every pixel. The manual factors follow Pillow's ImageEnhance conventions (1.0 leaves the image
as it is; brightness 1.5 makes it 1.5 times as bright).
"""

import cv2
import numpy as np

from pipelines.quality.colour import neutral_cast
from pipelines.quality.working_image import working_image

STATS_SIDE = 512  # statistics (percentiles, means, casts) from a copy at most this large


def _stats_view(rgb: np.ndarray) -> np.ndarray:
    return working_image(rgb, STATS_SIDE)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _lut(rgb: np.ndarray, table: np.ndarray) -> np.ndarray:
    return cv2.LUT(rgb, np.clip(np.rint(table), 0, 255).astype(np.uint8))


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


# ---- tone -------------------------------------------------------------------------------------------------------
def auto_levels(rgb: np.ndarray, clip_percent: float = 0.5) -> np.ndarray:
    """Stretch luma so that its `clip_percent` darkest and brightest pixels reach black and white (one linear map
    for all channels)."""
    luma = _luma(_stats_view(rgb))
    low, high = np.percentile(luma, [clip_percent, 100.0 - clip_percent])
    if high - low < 8:  # a flat image: stretching would only amplify noise
        return rgb.copy()
    levels = np.arange(256, dtype=np.float64)
    return _lut(rgb, (levels - low) * 255.0 / (high - low))


def equalize(rgb: np.ndarray) -> np.ndarray:
    """Histogram equalisation of Lab lightness."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    lab[..., 0] = cv2.equalizeHist(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)


def clahe(rgb: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of Lab lightness (local contrast, bounded noise gain)."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)


def gamma(rgb: np.ndarray, value: float) -> np.ndarray:
    """Gamma curve: out = in ** (1 / value); above 1 brightens mid-tones, black and white stay."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    return _lut(rgb, 255.0 * levels ** (1.0 / value))


def exposure(rgb: np.ndarray, stops: float) -> np.ndarray:
    """What the camera would have recorded with `stops` more light (negative: less), in linear light; highlights
    pushed past white clip."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    return _lut(rgb, 255.0 * _linear_to_srgb(_srgb_to_linear(levels) * 2.0**stops))


def exposure_to(rgb: np.ndarray, target_mean: float, max_stops: float = 3.0) -> tuple[np.ndarray, float]:
    """The exposure change (within +/- `max_stops`) that brings mean luma to `target_mean` (0-1), and the result."""
    luma = _luma(_stats_view(rgb))
    counts = np.bincount(luma.ravel(), minlength=256).astype(np.float64)
    linear = _srgb_to_linear(np.arange(256) / 255.0)

    def mean_after(stops: float) -> float:
        return float((counts * _linear_to_srgb(linear * 2.0**stops)).sum() / counts.sum())

    low, high = -max_stops, max_stops
    for _ in range(30):  # mean_after is monotonic in stops: bisect
        mid = (low + high) / 2
        low, high = (mid, high) if mean_after(mid) < target_mean else (low, mid)
    stops = (low + high) / 2
    return exposure(rgb, stops), stops


def shadows(rgb: np.ndarray, amount: float = 0.5) -> np.ndarray:
    """Lift shadows (amount 0-1) with a curve that leaves highlights where they are."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    lifted = levels + amount * levels * (1.0 - levels) ** 2 * 2.0
    return _lut(rgb, 255.0 * lifted)


# ---- colour ---------------------------------------------------------------------------------------------------
def white_balance_grey_world(rgb: np.ndarray) -> np.ndarray:
    """Grey world: scale R and B so that the channel means match G's."""
    means = _stats_view(rgb).reshape(-1, 3).astype(np.float64).mean(axis=0)
    gains = means[1] / np.maximum(means, 1.0)
    out = rgb.astype(np.float32) * gains.astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def white_balance_robust(rgb: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Shift Lab a*/b* so that the least chromatic mid-tone surfaces become neutral: the quality stage's colour-cast
    estimate (`neutral_cast`), removed. A scene full of one real colour (grass, sky) keeps it: only near-grey
    surfaces decide the shift."""
    view = cv2.cvtColor(_stats_view(rgb).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    chroma = np.hypot(view[..., 1], view[..., 2])
    cast_a, cast_b = neutral_cast(view[..., 0], view[..., 1], view[..., 2], chroma)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    lab[..., 1] -= strength * cast_a
    lab[..., 2] -= strength * cast_b
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def saturation(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Scale Lab chroma by `factor` (0: grey, 1: unchanged)."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    lab[..., 1:] *= factor
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB) * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ---- detail ----------------------------------------------------------------------------------------------------
def denoise(rgb: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Edge-preserving denoise: a bilateral filter whose colour range follows the estimated noise."""
    luma = _luma(_stats_view(rgb)).astype(np.float32)
    residual = luma - cv2.GaussianBlur(luma, (3, 3), 0)
    sigma = max(2.0, float(np.median(np.abs(residual))) * 1.4826 * 1.6)  # robust noise sigma of the luma
    return cv2.bilateralFilter(rgb, d=5, sigmaColor=2.5 * sigma * strength, sigmaSpace=1.5)


def sharpen(rgb: np.ndarray, amount: float = 0.6, radius: float = 1.0, threshold: int = 2) -> np.ndarray:
    """Unsharp mask on luma (no colour fringes): add `amount` x (luma - blurred luma) where it exceeds
    `threshold` grey levels."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    lightness = lab[..., 0].astype(np.float32)
    detail = lightness - cv2.GaussianBlur(lightness, (0, 0), radius)
    detail[np.abs(detail) < threshold] = 0
    lab[..., 0] = np.clip(lightness + amount * detail, 0, 255).astype(np.uint8)
    return cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)


# ---- manual factors (Pillow ImageEnhance conventions) -------------------------------------------------------------
def brightness_factor(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Multiply every value by `factor` (0: black, 1: unchanged)."""
    return _lut(rgb, np.arange(256, dtype=np.float64) * factor)


def contrast_factor(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Move every value away from (factor > 1) or towards (< 1) the mean luma."""
    mean = float(_luma(_stats_view(rgb)).mean())
    return _lut(rgb, mean + (np.arange(256, dtype=np.float64) - mean) * factor)


def saturation_factor(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the grey image (0: grey, 1: unchanged, 2: twice as far from grey)."""
    grey = _luma(rgb).astype(np.float32)[..., None]
    return np.clip(grey + (rgb.astype(np.float32) - grey) * factor + 0.5, 0, 255).astype(np.uint8)


def sharpness_factor(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Blend with a smoothed copy (0: smoothed, 1: unchanged, 2: sharpened), as ImageEnhance.Sharpness."""
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0
    smooth = cv2.filter2D(rgb, -1, kernel, borderType=cv2.BORDER_REPLICATE).astype(np.float32)
    return np.clip(smooth + (rgb.astype(np.float32) - smooth) * factor + 0.5, 0, 255).astype(np.uint8)
