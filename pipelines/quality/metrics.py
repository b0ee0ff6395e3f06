"""Classical image-quality metrics: one frozen `QualityMetrics` per image, computed on the working image.

All pixel statistics are taken on the normalised working image (`pipelines.quality.working_image`), so
they describe the photo at display size and do not depend on the camera's resolution. Resolution and
aspect ratio come from the original size. The pixel-level metrics need a crop at the resolution the file was stored
at (`native_crop`): blockiness (the JPEG grid exists only there) and, for photos larger than the working image, the
`native_*` noise metrics (per-pixel noise that the shrink to display size averages away: a 12 MP photo's grain is
measured at 100 % zoom too). When the working image *is* the original it is used directly; without a crop these
metrics are ``None``.
"""

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from pipelines.quality.colour import measure_colour, measure_tone
from pipelines.quality.noise import blockiness, chroma_noise_sigma, impulse_fraction, noise_sigma
from pipelines.quality.sharpness import measure_sharpness


@dataclass(frozen=True)
class QualityMetrics:
    """Classical metrics of one image. Gray/luma values are in [0, 1] unless a field says 0-255."""

    # geometry (original image)
    width: int  # px, upright original width
    height: int  # px
    megapixels: float  # width * height / 1e6
    short_side: int  # px, min(width, height)
    aspect_ratio: float  # long side / short side, >= 1
    working_scale: float  # working long side / original long side, (0, 1]
    # sharpness (working image); the five directional ones are None on a working image under 16 px on its short side
    # (a strip: no 2-D sharpness to measure, no blur verdict; sharpness.MIN_SIDE)
    laplacian_var: float  # variance of the 3x3 Laplacian of luma; 0 .. ~0.2, typical 0.005-0.1 when sharp
    tenengrad: float  # mean squared 3x3 Sobel gradient magnitude of luma; 0 .. ~2
    sharpness: float | None  # re-blur sharpness of the sharpest tiles, mean over 4 directions; 0 (blurred) .. 1
    sharpness_min_direction: float | None  # the same along the blurriest direction; 0 .. 1
    coarse_sharpness: float | None  # sharpness_min_direction at 256 px (one octave down, resampling-proof); 0 .. 1
    blur_anisotropy: float | None  # directional modulation b/a of the blur; ~0 defocus, > 0.1 motion blur; 0 .. ~1.4
    blur_direction_deg: float | None  # direction least sharp along (motion), degrees [0, 180), 0 = horizontal
    textured_fraction: float  # share of 32-px tiles with enough variation to judge sharpness; 0 .. 1
    sharpest_region: tuple[float, float, float, float]  # (x0, y0, x1, y1) in 0..1: box of the sharpest tiles
    # exposure and contrast (working image luma)
    brightness_mean: float  # mean luma; 0 .. 1
    brightness_p05: float  # 5th percentile of luma; 0 .. 1
    brightness_p50: float  # median luma; 0 .. 1
    brightness_p95: float  # 95th percentile of luma; 0 .. 1
    crushed_fraction: float  # share of pixels with luma <= 5/255; 0 .. 1
    blown_fraction: float  # share of pixels with luma >= 250/255; 0 .. 1
    contrast_rms: float  # standard deviation of luma; 0 .. 0.5
    contrast_spread: float  # histogram spread, 95th minus 5th luma percentile; 0 .. 1
    entropy_bits: float  # Shannon entropy of the 256-bin luma histogram; 0 .. 8 bits
    # colour (working image)
    saturation_mean: float  # mean HSV saturation of pixels with value >= 0.1; 0 .. 1
    saturation_p95: float  # 95th percentile of that saturation; 0 .. 1
    colourfulness: float  # Hasler-Suesstrunk M on 0-255 RGB; 0 .. ~200, > 60 "very colourful"
    mean_a: float  # mean Lab a* over the image (green- .. red+); Lab units, about -128 .. 127
    mean_b: float  # mean Lab b* over the image (blue- .. yellow+); Lab units
    cast_a: float  # mean a* of the 25% least chromatic mid-tone pixels (should be ~0); Lab units
    cast_b: float  # mean b* of those pixels; Lab units
    cast_strength: float  # length of (cast_a, cast_b): the colour cast; Lab units, 0 .. ~60, > ~8 visible
    cast_ratio: float  # |mean (a*, b*)| / spread of (a*, b*) (Gasparini-Schettini); 0 .. ~10
    chroma_p99: float  # 99th percentile of Lab chroma sqrt(a*^2 + b*^2); Lab units, < ~4 means gray
    channel_offset_rg: float  # mean(R - G), 0-255 units
    channel_offset_bg: float  # mean(B - G), 0-255 units
    # noise and compression
    noise_sigma: float  # luma noise standard deviation at working scale (Immerkaer), 0-255 units
    chroma_noise_sigma: float  # the same on Cr/Cb (larger of the two), 0-255 units
    impulse_fraction: float  # share of pixels > 80 levels off their 3x3 median (salt & pepper); 0 .. 1
    # the same three on the full-resolution crop; None when the working image is the photo (nothing finer to see)
    native_noise_sigma: float | None  # 0-255 units, per pixel of the file as stored
    native_chroma_noise_sigma: float | None  # 0-255 units
    native_impulse_fraction: float | None  # 0 .. 1
    blockiness: float | None  # JPEG 8x8 grid ratio at encoded resolution, 1.0 = none, > ~1.3 visible; None = unknown
    native_region: tuple[float, float, float, float] | None = None  # the native crop the pixel-level metrics saw

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain dict, e.g. for JSON responses and tag evidence (region boxes as lists, as JSON gives them back)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


REGION_METRICS = frozenset({"sharpest_region", "native_region"})  # boxes, not numbers: evidence only
METRIC_NAMES: tuple[str, ...] = tuple(n for n in QualityMetrics.__dataclass_fields__ if n not in REGION_METRICS)


def compute_metrics(
    working_rgb: np.ndarray,
    original_size: tuple[int, int],
    native_rgb: np.ndarray | None = None,
) -> QualityMetrics:
    """Metrics of a working image (HxWx3 uint8) whose original was `original_size` = (width, height).

    `native_rgb` is an optional HxWx3 uint8 crop of a full-scale decode for the pixel-level metrics (see
    `native_crop`). A reduced-scale JPEG (draft) decode averages noise and weakens the 8x8 grid: do not pass one.
    """
    if working_rgb.ndim != 3 or working_rgb.shape[2] != 3 or working_rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB working image, got {working_rgb.shape} {working_rgb.dtype}")
    width, height = int(original_size[0]), int(original_size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"original size must be positive, got {original_size}")
    gray_u8 = cv2.cvtColor(working_rgb, cv2.COLOR_RGB2GRAY)
    reduced = working_rgb.shape[1] != width or working_rgb.shape[0] != height
    native_gray = None  # the pixels at the file's own resolution: the crop, else the working image if it is the photo
    if native_rgb is not None:
        native_gray = cv2.cvtColor(native_rgb[:, :, :3], cv2.COLOR_RGB2GRAY)
    elif not reduced:
        native_gray = gray_u8
    if native_gray is not None and min(native_gray.shape) < 32:  # too small to find an 8-px grid in
        native_gray = native_rgb = None
    block = None if native_gray is None else blockiness(native_gray)
    fine = reduced and native_rgb is not None  # the crop shows pixels the working image averaged away
    sharp = measure_sharpness(gray_u8.astype(np.float32) / 255.0)
    tone = measure_tone(gray_u8)
    colour = measure_colour(working_rgb)
    return QualityMetrics(
        width=width,
        height=height,
        megapixels=width * height / 1e6,
        short_side=min(width, height),
        aspect_ratio=max(width, height) / min(width, height),
        working_scale=max(working_rgb.shape[:2]) / max(width, height),
        **asdict(sharp),
        **asdict(tone),
        **asdict(colour),
        noise_sigma=noise_sigma(gray_u8.astype(np.float32)),
        chroma_noise_sigma=chroma_noise_sigma(working_rgb),
        impulse_fraction=impulse_fraction(gray_u8),
        native_noise_sigma=noise_sigma(native_gray.astype(np.float32)) if fine else None,
        native_chroma_noise_sigma=chroma_noise_sigma(native_rgb[:, :, :3]) if fine else None,
        native_impulse_fraction=impulse_fraction(native_gray) if fine else None,
        blockiness=block,
        native_region=None if native_gray is None else _centre_box(native_gray.shape, (width, height)),
    )


def _centre_box(crop_shape: tuple[int, ...], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred crop `native_crop` takes, as a box in 0..1 of the upright original."""
    fx, fy = min(1.0, crop_shape[1] / size[0]), min(1.0, crop_shape[0] / size[1])
    return (round((1 - fx) / 2, 3), round((1 - fy) / 2, 3), round((1 + fx) / 2, 3), round((1 + fy) / 2, 3))
