"""Compressed bytes -> model-ready tensor, decoded once and bounded by `DecodeLimits`.

Two CPU decoders share one validation step (format allow-list, byte and pixel limits read from the
header before any pixel is decoded):

- ``pillow`` (the reference): a JPEG decodes at 1/2, 1/4 or 1/8 scale when the model input is much smaller
  than the photo (libjpeg-turbo through `pipelines.jpeg_markers.decode_jpeg_checked`: Pillow's draft decode's pixels,
  and a damaged file is refused rather than filled with grey), then EXIF orientation, RGB, resize, crop, normalise.
- ``opencv``: libjpeg-turbo via ``cv2.imdecode`` with ``IMREAD_REDUCED_COLOR_*`` for the same reduced
  scale (the JPEG data checked first: `pipelines.jpeg_markers.check_jpeg_data`); geometry and normalisation then go
  through the same Pillow code so numerics match.

`decode_image` is the one entry point: it validates, decodes once and produces exactly what the requested
consumers need (a tensor per model, the quality stage's working image).
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image

from pipelines.errors import InvalidImageError
from pipelines.full_size import load_full_size, rgb_array
from pipelines.image_header import REDUCED_DECODE_FORMATS, register_heif, upright_size
from pipelines.image_header import exif_orientation as exif_orientation
from pipelines.image_header import open_validated as open_validated
from pipelines.image_header import upright_image as upright_image
from pipelines.image_header import without_png_trailer as without_png_trailer
from pipelines.jpeg_markers import check_jpeg_data, decode_jpeg_checked
from pipelines.limits import DecodeLimits
from pipelines.native_crop import jpeg_centre_crop
from pipelines.orientation import SWAPS_AXES, upright_array
from pipelines.pixel_modes import SampleType as SampleType
from pipelines.pixel_modes import eight_bit_scale as eight_bit_scale
from pipelines.pixel_modes import tiff_sample_type, to_rgb
from pipelines.preprocess import PreprocessSpec, geometry_pil, normalize
from pipelines.quality.working_image import native_crop, working_image

register_heif()  # as before the header checks moved out: what opens images after importing this reads HEIF

DecoderName = Literal["pillow", "opencv"]
DecodedPixels = tuple[Image.Image, np.ndarray | None]  # upright RGB, and its HxWx3 array where the decode made one


def reduced_scale(
    image: Image.Image, orientation: int, specs: PreprocessSpec | Sequence[PreprocessSpec], min_long_side: int = 0
) -> int:
    """Largest JPEG DCT scale (1, 2, 4, 8) that still leaves every spec its resized size in each axis, and the
    longer side at least `min_long_side` (or the original's, if smaller)."""
    if image.format not in ("JPEG", "MPO"):
        return 1
    up_w, up_h = upright_size(image, orientation)
    needs = [s.minimum_decode_size(up_w, up_h) for s in ([specs] if isinstance(specs, PreprocessSpec) else specs)]
    long_need = min(min_long_side, max(up_w, up_h))

    def fits(scale: int) -> bool:
        w, h = up_w // scale, up_h // scale
        return max(w, h) >= long_need and all(w >= nw and h >= nh for nw, nh in needs)

    scale = 1
    while scale < 8 and fits(scale * 2):
        scale *= 2
    return scale


def _load_jpeg_checked(image: Image.Image, data: bytes, scale: int, orientation: int) -> DecodedPixels | None:
    """A JPEG (an MPO's first picture) decoded at 1/`scale` by the shared rule on lost data (`decode_jpeg_checked`:
    libjpeg-turbo: the pixels of Pillow's draft decode, no slower); None where Pillow is to decode it (a CMYK file,
    checked first; a harmless libjpeg warning)."""
    if image.mode not in ("RGB", "L"):
        check_jpeg_data(data, image.mode)
        return None
    width, height = image.size
    stored = decode_jpeg_checked(data, "RGB", scale, -(-width // scale), -(-height // scale))
    if stored is None:
        return None
    pixels = np.ascontiguousarray(upright_array(stored, orientation))
    del stored  # an EXIF-turned copy was made: the stored pixels go before Pillow's image (~7 bytes a pixel at most)
    return Image.fromarray(pixels), pixels


def _load_rgb_pillow(image: Image.Image, data: bytes, scale: int, orientation: int) -> DecodedPixels:
    if image.format in REDUCED_DECODE_FORMATS:
        decoded = _load_jpeg_checked(image, data, scale, orientation)
        if decoded is not None:
            return decoded
    try:
        if scale == 1:
            return load_full_size(image, data, orientation)
        stored_w, stored_h = image.size
        image.draft(image.mode if image.mode in ("RGB", "L") else None, (stored_w // scale, stored_h // scale))
        sample = tiff_sample_type(image)
        return to_rgb(upright_image(image, orientation), sample), None
    except MemoryError:
        raise  # the server's trouble (the pixel budgets were checked), not the file's
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises on hostile bytes is the file's fault
        raise InvalidImageError(f"image data is corrupt or truncated: {type(exc).__name__}: {exc}") from None


_CV2_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def _load_rgb_opencv(data: bytes, scale: int) -> DecodedPixels:
    # IMREAD_COLOR applies the EXIF orientation, like ImageOps.exif_transpose does for Pillow.
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _CV2_REDUCED[scale])
    if bgr is None:
        raise InvalidImageError("image data is corrupt or truncated (OpenCV could not decode it)")
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), None


@dataclass(frozen=True)
class DecodedRGB:
    """An upright RGB image (possibly decoded at reduced scale) and what the file header said."""

    rgb: Image.Image
    format: str
    width: int  # upright full-resolution size, before any reduced-scale decode
    height: int
    scale: int
    orientation: int = 1  # EXIF orientation the pixels were turned upright by
    pixels: np.ndarray | None = None  # `rgb` as HxWx3 uint8, where the decode made it (`pipelines.full_size`)

    @property
    def stored_size(self) -> tuple[int, int]:
        """(width, height) of the file's pixels as stored, before EXIF orientation."""
        return (self.height, self.width) if self.orientation in SWAPS_AXES else (self.width, self.height)


SINGLE_TENSOR = "input"  # key of the one tensor when `decode_image` is given a single spec


@dataclass(frozen=True)
class DecodedImage:
    """What every stage needs from one image, decoded once; full-resolution pixels are not kept."""

    tensors: dict[str, np.ndarray]  # model name (or SINGLE_TENSOR) -> model input, no batch axis
    width: int  # upright original size, after EXIF orientation
    height: int
    format: str
    decode_scale: int = 1  # 1, 2, 4 or 8 when JPEG was decoded at reduced scale
    working: np.ndarray | None = None  # HxWx3 uint8 working image of the quality stage
    native_rgb: np.ndarray | None = None  # full-resolution RGB centre crop (pixel-level quality metrics)
    decode_ms: float = 0.0  # wall time of the decode

    @property
    def tensor(self) -> np.ndarray:
        """The tensor, when the image was decoded for exactly one model."""
        if len(self.tensors) != 1:
            raise ValueError(f"decoded for {len(self.tensors)} models ({sorted(self.tensors)}): name one")
        return next(iter(self.tensors.values()))


def decode_rgb(
    data: bytes,
    spec: PreprocessSpec | Sequence[PreprocessSpec],
    limits: DecodeLimits,
    decoder: DecoderName = "pillow",
    reduced: bool = True,
    min_long_side: int = 0,
) -> DecodedRGB:
    """Validate and decode to an upright RGB image, at reduced JPEG scale when every spec (and
    `min_long_side`) allows."""
    header = without_png_trailer(open_validated(data, limits), data, limits)
    orientation = exif_orientation(header)
    width, height = upright_size(header, orientation)  # before draft() shrinks header.size in place
    scale = reduced_scale(header, orientation, spec, min_long_side) if reduced else 1
    fmt = header.format or ""
    if decoder == "opencv" and fmt in ("JPEG", "MPO"):
        check_jpeg_data(data, header.mode)
        rgb, pixels = _load_rgb_opencv(data, scale)
    else:
        rgb, pixels = _load_rgb_pillow(header, data, scale, orientation)
    return DecodedRGB(rgb, fmt, width, height, scale, orientation, pixels)


def decode_image(
    data: bytes,
    specs: PreprocessSpec | Mapping[str, PreprocessSpec],
    limits: DecodeLimits | None = None,
    working_max_side: int | None = None,
    decoder: DecoderName = "pillow",
    reduced: bool = True,
) -> DecodedImage:
    """Decode once for every consumer; raises `ImageInputError` subclasses on bad input.

    `specs`: one model's preprocessing, or several by model name (a tensor each). `working_max_side`: also keep
    the quality stage's working image (longer side at most this many px) and the full-resolution centre crop its
    pixel-level metrics need (after a reduced-scale JPEG decode, from a second decode of only the rows down to the
    crop: `pipelines.native_crop`). The reduced JPEG scale is the largest that satisfies every consumer at once,
    so a 12 MP photo is still decoded at 1/4 or 1/8 scale when they all allow it.
    """
    named = {SINGLE_TENSOR: specs} if isinstance(specs, PreprocessSpec) else dict(specs)
    start = time.perf_counter()
    decoded = decode_rgb(data, list(named.values()), limits or DecodeLimits(), decoder, reduced, working_max_side or 0)
    tensors = {name: normalize(geometry_pil(decoded.rgb, spec), spec) for name, spec in named.items()}
    working = native = None
    if working_max_side:
        pixels = decoded.pixels if decoded.pixels is not None else rgb_array(decoded.rgb)
        working = working_image(pixels, working_max_side)
        if decoded.scale == 1:
            native = native_crop(pixels)
        else:
            native = jpeg_centre_crop(data, decoded.stored_size, decoded.orientation)
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    return DecodedImage(
        tensors, decoded.width, decoded.height, decoded.format, decoded.scale, working, native, elapsed_ms
    )
