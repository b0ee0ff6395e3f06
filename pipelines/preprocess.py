"""Model preprocessing as data (`PreprocessSpec`) and the numeric steps that apply it.

The reference path is plain Pillow: convert to RGB, resize (shorter side or exact), centre crop, then
`(pixel * scale - mean) / std` (`reference_preprocess`). The served path computes the same thing cheaper:

- `geometry_pil` resamples only the crop's source rectangle (Pillow's `resize(..., box=...)`): the same filter
  centred on the same source positions and reading the same source pixels, but 224x224 outputs instead of
  e.g. 341x256 of which a third is cropped away. Pillow's two passes round to 8 bits in between over a
  different extent, so a value may differ from the reference by one grey level (max 1, on average ~2 % of
  the values, mean signed difference ~0.001 level; `tests/unit/test_preprocess.py` pins both).
- `normalize` changes the layout on uint8 (a quarter of the bytes) and applies `x * (scale/std) - mean/std`
  in place: one float buffer instead of four.

Every decoder must match the reference within one grey level; tests compare against `reference_preprocess`.
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


def _affine(spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """(gain, offset) with `(x * scale - mean) / std == x * gain - offset`, shaped to broadcast over the layout."""
    std = np.asarray(spec.std, dtype=np.float64)
    gain = (spec.scale / std).astype(np.float32)
    offset = (np.asarray(spec.mean, dtype=np.float64) / std).astype(np.float32)
    if spec.layout == "NCHW":
        return gain.reshape(3, 1, 1), offset.reshape(3, 1, 1)
    return gain, offset


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HWC or NHWC uint8 pixels -> model tensor (scale, mean/std, layout, dtype). Works on one image or a batch.

    The layout changes on uint8, then one float32 buffer is scaled and shifted in place."""
    out = np.moveaxis(pixels, -1, -3) if spec.layout == "NCHW" else pixels
    if spec.dtype == "uint8":
        return np.ascontiguousarray(out)
    x = out.astype(np.float32, order="C")  # the one float copy, contiguous in the model's layout
    gain, offset = _affine(spec)
    x *= gain
    x -= offset
    return x.astype(np.float16) if spec.dtype == "float16" else x


def geometry_pil(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Resize + crop an RGB Pillow image, resampling only the crop's source rectangle; returns HWC uint8."""
    width, height = image.size
    resized_w, resized_h = spec.resized_size(width, height)
    left, top, right, bottom = crop_box(resized_w, resized_h, spec.crop_size)
    if (resized_w, resized_h) == (width, height):
        if (left, top, right, bottom) != (0, 0, width, height):
            image = image.crop((left, top, right, bottom))
        return np.asarray(image, dtype=np.uint8)
    sx, sy = width / resized_w, height / resized_h
    box = (left * sx, top * sy, right * sx, bottom * sy)
    return np.asarray(image.resize((right - left, bottom - top), PIL_FILTERS[spec.interpolation], box=box))


def reference_geometry(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """The textbook geometry: resize the whole image, then centre-crop; returns HWC uint8."""
    size = spec.resized_size(*image.size)
    if size != image.size:
        image = image.resize(size, PIL_FILTERS[spec.interpolation])
    box = crop_box(image.width, image.height, spec.crop_size)
    if box != (0, 0, image.width, image.height):
        image = image.crop(box)
    return np.asarray(image, dtype=np.uint8)


def reference_preprocess(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """The plain-Pillow reference (full decode, RGB, resize, crop, textbook normalisation); CHW/HWC, no batch axis."""
    pixels = reference_geometry(image.convert("RGB"), spec).astype(np.float32)
    if spec.dtype != "uint8":
        pixels = (pixels * np.float32(spec.scale) - np.asarray(spec.mean, np.float32)) / np.asarray(
            spec.std, np.float32
        )
        pixels = pixels.astype(np.float16) if spec.dtype == "float16" else pixels
    else:
        pixels = pixels.astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(pixels, -1, -3) if spec.layout == "NCHW" else pixels)
