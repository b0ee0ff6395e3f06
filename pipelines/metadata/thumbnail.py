"""One small upright sRGB thumbnail per file, the only pixels metadata ever decodes.

JPEG is decoded at 1/2..1/8 scale (`Image.draft`, via `Image.thumbnail`), HEIF from its embedded thumbnail
when pillow-heif finds a matching one; other formats decode once and shrink. The perceptual hash and the
colour statistics both read this thumbnail.
"""

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageCms

from pipelines.orientation import UPRIGHT_TRANSPOSE

THUMBNAIL_SIZE = 128
MAX_CACHED_ICC_BYTES = 64 * 1024
_RESIZABLE = frozenset({"1", "L", "P", "RGB", "RGBA", "RGBX", "LA", "PA", "La", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"})


@dataclass(frozen=True)
class Thumbnail:
    """An RGB or RGBA image of at most `THUMBNAIL_SIZE` px a side, as the viewer sees it."""

    image: Image.Image
    srgb: bool  # False when an embedded ICC profile could not be applied (values are device RGB)


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale to 8-bit L by scaling, not clipping. Shrunk first (box filter, which
    Pillow has for these modes) to twice the thumbnail size, the range read from the whole image: float64 copies of
    the full image took 32 bytes a pixel (1.3 GB for a 92 KB 40 MP 16-bit PNG)."""
    deep16 = image.mode.startswith("I;16")
    low, high = (0.0, 0.0) if deep16 else (float(v) for v in image.getextrema())
    shrink = max(image.size) / (2 * THUMBNAIL_SIZE)
    if shrink > 1:
        size = (max(1, round(image.width / shrink)), max(1, round(image.height / shrink)))
        image = image.resize(size, Image.Resampling.BOX)
    pixels = np.asarray(image).astype(np.float64)
    if deep16:
        scaled = pixels / 257.0
    else:
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _target_mode(image: Image.Image) -> str:
    has_alpha = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
    return "RGBA" if has_alpha else "RGB"


@lru_cache(maxsize=32)
def _icc_transform(icc: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform:
    # Building a transform costs ~2 ms; photos from one camera share one profile, so cache a few.
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.buildTransform(source, _srgb_profile(), in_mode, out_mode)


def _apply_icc(image: Image.Image, icc: bytes, target: str) -> Image.Image:
    if image.mode not in ("RGB", "RGBA", "CMYK", "L"):
        image = image.convert(target)
    if len(icc) > MAX_CACHED_ICC_BYTES:
        return _icc_transform.__wrapped__(icc, image.mode, target).apply(image)
    return _icc_transform(icc, image.mode, target).apply(image)


def upright_thumbnail(image: Image.Image, orientation: int | None, heif: bool, errors: list[str]) -> Thumbnail:
    """Decode `image` (opened, not loaded) to a bounded upright thumbnail; may raise on corrupt pixel data."""
    icc = image.info.get("icc_profile")
    if image.mode not in _RESIZABLE:
        image.load()
        image = _to_8bit(image)
    if heif:  # pick an embedded thumbnail of >= 128 px when pillow-heif finds a matching one
        image.draft(None, (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BICUBIC, reducing_gap=2.0)
    if not heif and orientation in UPRIGHT_TRANSPOSE:  # libheif has rotated HEIF already
        image = image.transpose(UPRIGHT_TRANSPOSE[orientation])
    target = _target_mode(image)
    srgb = True
    if icc:
        try:
            return Thumbnail(_apply_icc(image, icc, target), srgb=True)
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
            errors.append(f"colors: ICC profile not applied, values are device RGB: {exc}")
            srgb = False
    if image.mode == "P" and target == "RGBA":
        image = image.convert("RGBA")
    return Thumbnail(image if image.mode == target else image.convert(target), srgb=srgb)
