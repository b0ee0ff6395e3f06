"""Model preprocessing as data (`PreprocessSpec`) and the numeric steps that apply it.

The reference path is plain Pillow: convert to RGB, resize (shorter side or exact), centre crop, then
`(pixel * scale - mean) / std`. Every decoder must reproduce it; tests compare against
`reference_preprocess`.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

ResizePolicy = Literal["shorter_side", "exact", "none"]
Interpolation = Literal["bilinear", "bicubic", "nearest", "area"]

PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "area": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model wants its pixels: geometry first, then per-channel normalisation and layout."""

    resize_policy: ResizePolicy = "shorter_side"
    resize_size: tuple[int, int] = (256, 256)  # (height, width); for shorter_side only [0] is used
    crop_size: tuple[int, int] | None = (224, 224)  # (height, width); centre crop, None = no crop
    interpolation: Interpolation = "bilinear"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "float16", "uint8"] = "float32"

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the tensor handed to the model."""
        if self.crop_size is not None:
            return self.crop_size
        return self.resize_size

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step, before cropping."""
        if self.resize_policy == "none":
            return width, height
        if self.resize_policy == "exact":
            return self.resize_size[1], self.resize_size[0]
        target = self.resize_size[0]
        if width <= height:
            return target, max(1, int(round(height * target / width)))
        return max(1, int(round(width * target / height))), target

    def minimum_decode_size(self, width: int, height: int) -> tuple[int, int]:
        """Smallest (width, height) a reduced-scale decode may produce without losing detail for this spec."""
        return self.resized_size(width, height)


def crop_box(width: int, height: int, crop: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """Centre-crop box (left, top, right, bottom), matching torchvision's CenterCrop rounding."""
    if crop is None:
        return 0, 0, width, height
    ch, cw = crop
    if cw > width or ch > height:
        raise ValueError(f"crop {cw}x{ch} is larger than the resized image {width}x{height}")
    left = int(round((width - cw) / 2.0))
    top = int(round((height - ch) / 2.0))
    return left, top, left + cw, top + ch


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HWC or NHWC uint8 pixels -> model tensor (scale, mean/std, layout, dtype). Works on one image or a batch."""
    if spec.dtype == "uint8":
        out = pixels
    else:
        x = pixels.astype(np.float32)
        if spec.scale != 1.0:
            x *= np.float32(spec.scale)
        x -= np.asarray(spec.mean, dtype=np.float32)
        x /= np.asarray(spec.std, dtype=np.float32)
        out = x.astype(np.float16) if spec.dtype == "float16" else x
    if spec.layout == "NCHW":
        out = np.moveaxis(out, -1, -3)
    return np.ascontiguousarray(out)


def geometry_pil(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize + crop an RGB Pillow image; returns HWC uint8."""
    size = spec.resized_size(*image.size)
    if size != image.size:
        image = image.resize(size, PIL_FILTERS[spec.interpolation])
    box = crop_box(image.width, image.height, spec.crop_size)
    if box != (0, 0, image.width, image.height):
        image = image.crop(box)
    return np.asarray(image, dtype=np.uint8)


def reference_preprocess(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """The plain-Pillow reference (full decode, RGB, resize, crop, normalise); CHW/HWC without batch axis."""
    return normalize(geometry_pil(image.convert("RGB"), spec), spec)
