"""One small upright sRGB thumbnail per file, the only pixels metadata ever decodes.

JPEG is decoded at 1/2..1/8 scale, the scale `Image.thumbnail`'s draft picks, by the decoders' one rule on lost
data (`pipelines.jpeg_markers.decode_jpeg_checked`: libjpeg-turbo in strict mode, the same pixels as Pillow's draft
decode): a damaged JPEG raises `InvalidImageError` instead of giving a thumbnail Pillow filled with grey. HEIF comes
from its embedded thumbnail when pillow-heif finds a matching one; other formats decode once and shrink. The
perceptual hash and the colour statistics both read this thumbnail.
"""

import io
import math
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageCms

from pipelines.image_header import turned_by_pillow
from pipelines.jpeg_markers import check_jpeg_data, decode_jpeg_checked
from pipelines.orientation import UPRIGHT_TRANSPOSE
from pipelines.pixel_modes import (
    DEEP_GREY_MODES,
    TOP_SCALED_MODES,
    eight_bit_grey,
    largest_grey_value,
    tiff_sample_type,
)

THUMBNAIL_SIZE = 128
REDUCING_GAP = 2.0  # Image.thumbnail's: the DCT scale leaves the final resize at least this factor to shrink
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})  # an MPO's first picture is the JPEG stream its bytes start with
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
    """16/32-bit integer and float greyscale (loaded) to 8-bit L by the decode stage's one rule
    (`pipelines.pixel_modes.eight_bit_grey`: by the sample type and the largest value, not stretched between the
    image's extremes: a uniform mid-grey float TIFF came out black). Shrunk first (box filter, which Pillow has for
    these modes) to twice the thumbnail size, the largest value read from the whole image: float64 copies of the
    full image took 32 bytes a pixel (1.3 GB for a 92 KB 40 MP 16-bit PNG)."""
    sample = tiff_sample_type(image)  # from the file's tags: the shrunk copy has none
    top = largest_grey_value(image, sample) if image.mode in TOP_SCALED_MODES else None
    shrink = max(image.size) / (2 * THUMBNAIL_SIZE)
    if shrink > 1:
        size = (max(1, round(image.width / shrink)), max(1, round(image.height / shrink)))
        image = image.resize(size, Image.Resampling.BOX)
    if image.mode not in DEEP_GREY_MODES:  # no such mode known to reach here: Pillow's own conversion
        return image.convert("L")
    return eight_bit_grey(image, sample, top)


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


def _thumbnail_size(width: int, height: int) -> tuple[int, int] | None:
    """The size `Image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))` gives a `width` x `height` image (its aspect
    rounding); None where the image already fits."""
    if width <= THUMBNAIL_SIZE and height <= THUMBNAIL_SIZE:
        return None
    aspect, side = width / height, THUMBNAIL_SIZE
    if aspect <= 1:
        exact = side * aspect
        return max(min(math.floor(exact), math.ceil(exact), key=lambda n: abs(aspect - n / side)), 1), side
    exact = side / aspect
    return side, max(min(math.floor(exact), math.ceil(exact), key=lambda n: 0 if n == 0 else abs(aspect - side / n)), 1)


def _jpeg_thumbnail(image: Image.Image, data: bytes) -> Image.Image | None:
    """A JPEG's thumbnail as `Image.thumbnail` makes it (draft scale 1/2..1/8, then a bicubic resize of the scaled
    image's exact extent), its pixels decoded by `decode_jpeg_checked`: one entropy decode, which raises
    `InvalidImageError` where libjpeg lost data. None where Pillow is to decode it: a CMYK file (checked first, at
    1/8 scale), or a harmless libjpeg warning."""
    if image.mode not in ("RGB", "L"):
        check_jpeg_data(data, image.mode)
        return None
    width, height = image.size
    final = _thumbnail_size(width, height)
    scale = 1
    if final is not None:  # Image.draft's choice: the largest of 8, 4, 2 not above the shrink to twice the size
        shrink = min(width // int(THUMBNAIL_SIZE * REDUCING_GAP), height // int(THUMBNAIL_SIZE * REDUCING_GAP))
        scale = next(s for s in (8, 4, 2, 1) if shrink >= s or s == 1)
    colours = "GRAY" if image.mode == "L" else "RGB"
    pixels = decode_jpeg_checked(data, colours, scale, -(-width // scale), -(-height // scale))
    if pixels is None:
        return None
    decoded = Image.fromarray(pixels[:, :, 0] if image.mode == "L" else pixels)  # L or RGB, as Pillow's
    if final is None or decoded.size == final:
        return decoded
    box = (0.0, 0.0, width / scale, height / scale)  # the draft's box: the stored pixels' extent at this scale
    return decoded.resize(final, Image.Resampling.BICUBIC, box=box, reducing_gap=REDUCING_GAP)


def upright_thumbnail(
    image: Image.Image, data: bytes, orientation: int | None, heif: bool, errors: list[str]
) -> Thumbnail:
    """Decode `image` (opened from `data`, not loaded) to a bounded upright thumbnail; may raise on corrupt pixel
    data (`InvalidImageError` for a JPEG that libjpeg reads with loss)."""
    icc = image.info.get("icc_profile")
    turned = heif or turned_by_pillow(image)  # libheif and Pillow's TIFF loader turn the pixels themselves
    jpeg = _jpeg_thumbnail(image, data) if image.format in _JPEG_FORMATS else None
    if jpeg is not None:
        image = jpeg
    else:
        if image.mode not in _RESIZABLE:
            image.load()
            image = _to_8bit(image)
        if heif:  # pick an embedded thumbnail of >= 128 px when pillow-heif finds a matching one
            image.draft(None, (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP)
    if not turned and orientation in UPRIGHT_TRANSPOSE:
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
