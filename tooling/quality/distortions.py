"""Synthetic degradations of known type and strength, modelled on the KADID-10k distortion families.

`apply_distortion(rgb, kind, level, rng)` turns a clean HxWx3 uint8 photo into a degraded one; level 1 is
barely visible, level 5 is severe. Spatial strengths (blur radius, motion length, pixel block) are given
in pixels of the 512-px working image and scaled by the photo's size, so a level means the same visible
strength on a 500-px and on a 4000-px photo. Noise strengths are per pixel at the photo's own resolution.
Everything random draws from the `rng` passed in, so a seed reproduces a data set exactly.

`EXPECTED_TAGS` says which quality tags a distortion must produce and from which level; `ALLOWED_TAGS`
lists side effects that are not counted as false positives (darkening also lowers contrast, ...).
"""

import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from pipelines.quality.working_image import WORKING_MAX_SIDE

LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian_blur": (0.5, 1.0, 1.6, 2.5, 4.0),  # sigma, working px
    "lens_blur": (1.0, 1.5, 2.5, 3.5, 5.0),  # disk radius, working px
    "motion_blur": (3.0, 5.0, 8.0, 12.0, 18.0),  # line length, working px; random direction
    "white_noise": (3.0, 6.0, 10.0, 16.0, 25.0),  # sigma per RGB channel, 0-255 units
    "color_noise": (4.0, 8.0, 14.0, 22.0, 32.0),  # sigma on the Cb/Cr chroma channels only, 0-255 units
    "impulse_noise": (0.003, 0.01, 0.02, 0.04, 0.08),  # fraction of pixels set to 0 or 255
    "multiplicative_noise": (0.05, 0.1, 0.16, 0.25, 0.4),  # sigma of the per-pixel gain (speckle)
    "jpeg": (40.0, 25.0, 15.0, 8.0, 3.0),  # Pillow JPEG quality
    "jpeg2000": (30.0, 60.0, 120.0, 240.0, 480.0),  # compression ratio (Pillow/OpenJPEG "rates" mode)
    "darken": (0.8, 1.4, 2.2, 3.0, 4.0),  # exposure change in stops (EV), in linear light
    "brighten": (0.5, 1.0, 1.5, 2.0, 2.7),  # exposure change in stops (EV), in linear light, clipped at white
    "contrast_change": (0.75, 0.6, 0.45, 0.32, 0.2),  # factor around the mean luma
    "desaturate": (0.7, 0.5, 0.35, 0.2, 0.08),  # chroma factor in Lab
    "oversaturate": (1.4, 1.8, 2.3, 2.9, 3.6),  # chroma factor in Lab
    "color_cast": (4.0, 8.0, 12.0, 18.0, 26.0),  # Lab (a*, b*) offset length; random hue direction
    "pixelate": (2.0, 3.0, 4.0, 6.0, 8.0),  # block size, working px
    "quantization": (32.0, 16.0, 10.0, 6.0, 4.0),  # levels per channel
}
KINDS: tuple[str, ...] = tuple(LEVELS)

# kind -> {tag: lowest level at which the tag must fire}
EXPECTED_TAGS: dict[str, dict[str, int]] = {
    "gaussian_blur": {"blurry": 3},
    "lens_blur": {"blurry": 3},
    "motion_blur": {"blurry": 3, "motion_blur": 3},
    "white_noise": {"noisy": 3},
    "color_noise": {"noisy": 3},
    "impulse_noise": {"noisy": 3},
    "multiplicative_noise": {"noisy": 3},
    "jpeg": {"compression_artifacts": 3},
    "jpeg2000": {"blurry": 4},
    "darken": {"low_light": 3},
    "brighten": {"overexposed": 3},
    "contrast_change": {"low_contrast": 3},
    "desaturate": {"undersaturated": 3},
    "oversaturate": {"oversaturated": 3},
    "color_cast": {"color_cast": 3},
    "pixelate": {},
    "quantization": {},
}
# Side effects a distortion may legitimately cause (at any level): never counted as false positives.
ALLOWED_TAGS: dict[str, frozenset[str]] = {
    "gaussian_blur": frozenset({"low_contrast", "low_information"}),
    "lens_blur": frozenset({"low_contrast", "low_information"}),
    "motion_blur": frozenset({"low_contrast", "low_information"}),
    "white_noise": frozenset({"compression_artifacts"}),
    "color_noise": frozenset({"compression_artifacts", "oversaturated"}),
    "impulse_noise": frozenset({"compression_artifacts"}),
    "multiplicative_noise": frozenset({"compression_artifacts", "oversaturated"}),
    "jpeg": frozenset({"blurry", "noisy", "undersaturated", "low_information"}),
    "jpeg2000": frozenset({"compression_artifacts", "low_information"}),
    "darken": frozenset({"low_contrast", "undersaturated", "low_information", "color_cast"}),
    # pushing exposure amplifies the noise already in the shadows and clips channels one by one (garish hues)
    "brighten": frozenset(
        {"low_contrast", "undersaturated", "low_information", "color_cast", "noisy", "oversaturated"}
    ),
    "contrast_change": frozenset({"undersaturated", "low_information", "blurry"}),
    "desaturate": frozenset({"grayscale"}),
    "oversaturate": frozenset({"color_cast"}),
    "color_cast": frozenset({"oversaturated"}),
    "pixelate": frozenset({"blurry", "compression_artifacts", "low_information"}),
    "quantization": frozenset({"compression_artifacts", "low_information", "noisy", "low_contrast"}),
}


def expected_tags(kind: str, level: int) -> set[str]:
    """Tags a `kind` distortion at `level` must produce."""
    return {tag for tag, first in EXPECTED_TAGS[kind].items() if level >= first}


def _spatial_scale(rgb: np.ndarray) -> float:
    return max(rgb.shape[:2]) / WORKING_MAX_SIDE


def _to_float(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _convolve(rgb: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(rgb, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def _gaussian_blur(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), p * _spatial_scale(rgb), borderType=cv2.BORDER_REFLECT)


def _lens_blur(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    r = p * _spatial_scale(rgb)
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    # Anti-aliased disk: pixel coverage approximated by a 1-px linear ramp at the rim.
    disk = np.clip(r + 0.5 - np.hypot(yy, xx), 0.0, 1.0).astype(np.float32)
    return _convolve(rgb, disk)


def _motion_blur(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    length = max(2.0, p * _spatial_scale(rgb))
    angle = rng.uniform(0.0, np.pi)
    # Draw the line 4x supersampled and area-downsample it: a sub-pixel accurate, anti-aliased kernel.
    size = 2 * int(np.ceil(length / 2)) + 3
    big = np.zeros((size * 4, size * 4), np.float32)
    c, half = size * 2 - 0.5, length * 2
    dx, dy = half * np.cos(angle), half * np.sin(angle)
    shift = 4  # cv2.line fixed-point bits: coordinates in 1/16 px
    p0 = (round((c - dx) * 16), round((c - dy) * 16))
    p1 = (round((c + dx) * 16), round((c + dy) * 16))
    cv2.line(big, p0, p1, 1.0, thickness=1, lineType=cv2.LINE_AA, shift=shift)
    return _convolve(rgb, cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA))


def _white_noise(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(_to_float(rgb) + rng.normal(0.0, p / 255.0, rgb.shape).astype(np.float32))


def _color_noise(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycc[..., 1:] += rng.normal(0.0, p, ycc[..., 1:].shape).astype(np.float32)
    return cv2.cvtColor(np.clip(ycc + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def _impulse_noise(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    out = rgb.copy()
    hit = rng.random(rgb.shape[:2]) < p
    out[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255).astype(np.uint8)[:, None]
    return out


def _multiplicative_noise(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    gain = 1.0 + rng.normal(0.0, p, rgb.shape).astype(np.float32)
    return _to_uint8(_to_float(rgb) * gain)


def _encode_decode(rgb: np.ndarray, fmt: str, **params: object) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **params)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _jpeg(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return _encode_decode(rgb, "JPEG", quality=int(p))


def _jpeg2000(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return _encode_decode(rgb, "JPEG2000", quality_mode="rates", quality_layers=[p])


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def _exposure(rgb: np.ndarray, stops: float) -> np.ndarray:
    """What the camera would have recorded with `stops` more (or, negative, less) light."""
    return _to_uint8(_linear_to_srgb(_srgb_to_linear(_to_float(rgb)) * np.float32(2.0**stops)))


def _darken(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return _exposure(rgb, -p)


def _brighten(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return _exposure(rgb, p)


def _contrast_change(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    x = _to_float(rgb)
    mean = float(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).mean()) / 255.0
    return _to_uint8(mean + (x - mean) * p)


def _scale_chroma(rgb: np.ndarray, factor: float, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    lab = cv2.cvtColor(_to_float(rgb), cv2.COLOR_RGB2Lab)
    lab[..., 1] = lab[..., 1] * factor + offset[0]
    lab[..., 2] = lab[..., 2] * factor + offset[1]
    return _to_uint8(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB))


def _desaturate(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return _scale_chroma(rgb, p)


def _oversaturate(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return _scale_chroma(rgb, p)


def _color_cast(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform(0.0, 2 * np.pi)
    return _scale_chroma(rgb, 1.0, (p * float(np.cos(hue)), p * float(np.sin(hue))))


def _pixelate(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    block = max(2.0, p * _spatial_scale(rgb))
    small = cv2.resize(rgb, (max(1, round(w / block)), max(1, round(h / block))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def _quantization(rgb: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    step = 255.0 / (p - 1)
    return (np.round(rgb.astype(np.float32) / step) * step + 0.5).clip(0, 255).astype(np.uint8)


_APPLY: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gaussian_blur": _gaussian_blur,
    "lens_blur": _lens_blur,
    "motion_blur": _motion_blur,
    "white_noise": _white_noise,
    "color_noise": _color_noise,
    "impulse_noise": _impulse_noise,
    "multiplicative_noise": _multiplicative_noise,
    "jpeg": _jpeg,
    "jpeg2000": _jpeg2000,
    "darken": _darken,
    "brighten": _brighten,
    "contrast_change": _contrast_change,
    "desaturate": _desaturate,
    "oversaturate": _oversaturate,
    "color_cast": _color_cast,
    "pixelate": _pixelate,
    "quantization": _quantization,
}


def apply_distortion(rgb: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Degrade an HxWx3 uint8 RGB image with distortion `kind` at `level` (1 = slight .. 5 = severe)."""
    if kind not in _APPLY:
        raise ValueError(f"unknown distortion {kind!r}; known: {', '.join(KINDS)}")
    if not 1 <= level <= 5:
        raise ValueError(f"level must be 1..5, got {level}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(_APPLY[kind](rgb, LEVELS[kind][level - 1], rng))
