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

import io
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError
from pipelines.full_size import load_full_size, rgb_array
from pipelines.jpeg_markers import (
    check_header_markers,
    check_jpeg_data,
    decode_jpeg_checked,
    jpeg_scan_count,
    scan_limit,
)
from pipelines.limits import DecodeLimits
from pipelines.native_crop import jpeg_centre_crop
from pipelines.orientation import SWAPS_AXES, UPRIGHT_TRANSPOSE, upright_array
from pipelines.pixel_modes import SampleType as SampleType  # re-exported: pipelines.convert.deep_samples
from pipelines.pixel_modes import eight_bit_scale as eight_bit_scale
from pipelines.pixel_modes import tiff_sample_type, to_rgb
from pipelines.preprocess import PreprocessSpec, geometry_pil, normalize
from pipelines.quality.working_image import native_crop, working_image
from pipelines.warning_capture import captured_warnings

DecoderName = Literal["pillow", "opencv"]
DecodedPixels = tuple[Image.Image, np.ndarray | None]  # upright RGB, and its HxWx3 array where the decode made one

# `DecodeLimits` governs image sizes: `open_validated` checks every image's size from its header before a pixel is
# decoded, and every open of client bytes goes through it. Pillow's own bomb check (an error at 2 x 89,478,485
# pixels, run inside `Image.open`) was a hidden cap under a larger IMGSERVE_MAX_PIXELS, answered in Pillow's words.
Image.MAX_IMAGE_PIXELS = None

try:  # HEIF/AVIF are accepted only where the plugin is installed; without it such files get 415.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - depends on the optional 'heif' extra
    pass

# Magic numbers of the formats we support: unidentifiable bytes that start like one of these are a
# corrupt image (400); anything else is not a supported image at all (415).
_REDUCED_DECODE_FORMATS = frozenset({"JPEG", "MPO"})  # draft decode at 1/2..1/8 scale: no full-size buffer
_SUPPORTED_SIGNATURES: tuple[bytes, ...] = (
    b"\xff\xd8",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
)


def _looks_like_supported_image(data: bytes) -> bool:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    if data[4:8] == b"ftyp":  # HEIF / AVIF container
        return True
    return data.startswith(_SUPPORTED_SIGNATURES)


def open_validated(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Open lazily (header only) and enforce the limits; raises an `ImageInputError` subclass."""
    if not data:
        raise InvalidImageError("empty image: no bytes were sent")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    if data.startswith(b"\xff\xd8"):
        check_header_markers(data)
    try:
        with captured_warnings() as caught:
            image = Image.open(io.BytesIO(data))
        for warning in caught:  # the limits below decide, not Pillow's DecompressionBombWarning; the rest go on
            if not issubclass(warning.category, Image.DecompressionBombWarning):
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image has too many pixels (decompression bomb?): {exc}") from None
    except UnidentifiedImageError:
        if _looks_like_supported_image(data):
            raise InvalidImageError(
                "image data is corrupt: the header of a supported format could not be read"
            ) from None
        raise UnsupportedFormatError(
            f"unrecognised image format; supported: {', '.join(sorted(limits.formats))}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever Pillow raises on hostile bytes is the file's fault
        raise InvalidImageError(f"image header is corrupt: {type(exc).__name__}: {exc}") from None
    if image.format not in limits.formats:
        raise UnsupportedFormatError(
            f"format {image.format} is not accepted; supported: {', '.join(sorted(limits.formats))}"
        )
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"image has an empty size {width}x{height}")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}"
        )
    if image.format not in _REDUCED_DECODE_FORMATS and width * height > limits.max_full_decode_pixels:
        raise ImageTooLargeError(
            f"{image.format} image is {width}x{height} = {width * height} pixels; formats decoded at full size are"
            f" limited to {limits.max_full_decode_pixels}"
        )
    _check_raw_size(image, data)
    check_png_palette(image)
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        limit = scan_limit(width, height)
        scans = jpeg_scan_count(data, stop_after=limit)
        if scans > limit:
            raise ImageTooLargeError(
                f"progressive JPEG has more than {limit} scans, the limit for {width}x{height} (each scan is a pass"
                " over the whole image)"
            )
    return image


def check_png_palette(header: Image.Image) -> None:
    """A PNG of palette colours (colour type 3) must carry its palette (PLTE, before the image data): without it the
    pixels are indices into nothing. libvips refuses such a file with only "unable to call thumbnail_buffer"
    and Pillow decodes it as black: every route refuses it here, in the API's words."""
    if header.format == "PNG" and header.mode == "P" and header.palette is None:
        raise InvalidImageError(
            "PNG image uses a palette (colour type 3) but has no PLTE chunk before its data: its colours are undefined"
        )


def _check_raw_size(image: Image.Image, data: bytes) -> None:
    """An uncompressed BMP must hold every row it declares: a 60-byte file declaring 10000x10000 would otherwise
    cost a 300 MB allocation before the decoder notices the missing data."""
    if image.format != "BMP" or image.info.get("compression", 0) not in (0, 3) or len(data) < 30:
        return
    header = int.from_bytes(data[14:18], "little")
    bits = int.from_bytes(data[24:26] if header == 12 else data[28:30], "little")
    width, height = image.size
    needed = (width * bits + 31) // 32 * 4 * height
    if len(data) < needed:
        raise InvalidImageError(
            f"BMP declares {width}x{height} at {bits} bits ({needed} bytes of pixels) but the file has {len(data)}"
        )


def exif_orientation(image: Image.Image) -> int:
    """EXIF orientation tag (1..8); 1 when absent or unreadable. Read from the header alone: a PNG's orientation
    counts only from chunks before its image data (eXIf, or Pillow's XMP / raw-profile fallbacks), as libvips, the
    PNG specification and browsers read it. Pillow's PNG `getexif()` decodes the whole image when no eXIf came before
    IDAT, to parse every chunk after it (a 32 MB file of 1.5 M text chunks took 6.5 s)."""
    try:
        exif = Image.Image.getexif(image) if image.format == "PNG" else image.getexif()
        value = exif.get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the decode
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
PNG_TRAILER_PARSED = 64 * 1024  # bytes of chunks after a PNG's image data that Pillow may walk through


def _png_image_data_end(header: Image.Image, data: bytes) -> int:
    """Offset just past a PNG's run of IDAT chunks (consecutive, by the specification), from Pillow's first one."""
    position = header.tile[0].offset - 8 if header.tile else len(data)
    while data[position + 4 : position + 8] == b"IDAT":
        position += 12 + int.from_bytes(data[position : position + 4], "big")
    return position


def without_png_trailer(header: Image.Image, data: bytes, limits: DecodeLimits) -> Image.Image:
    """The PNG opened again without the many chunks after its image data, which Pillow's `load()` parses in Python
    (1.5 M tiny text chunks: 6-8 s) and which change neither the pixels nor the orientation (`exif_orientation`)."""
    if header.format != "PNG":
        return header
    end = _png_image_data_end(header, data)
    if end > len(data) or len(data) - end <= PNG_TRAILER_PARSED:
        return header  # truncated (Pillow's decode says so) or little to walk
    header.close()
    return open_validated(data[:end] + _PNG_IEND, limits)


def upright_size(image: Image.Image, orientation: int) -> tuple[int, int]:
    """(width, height) as the viewer sees it, after EXIF orientation."""
    width, height = image.size
    return (height, width) if orientation in SWAPS_AXES else (width, height)


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


def upright_image(image: Image.Image, orientation: int) -> Image.Image:
    """The image turned upright by its EXIF orientation (`exif_orientation`; by the tag alone when Pillow cannot
    rewrite the EXIF). An image with nothing to turn is returned as it is: exif_transpose would copy it."""
    if orientation not in UPRIGHT_TRANSPOSE:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, EOFError):
        raise  # the pixels themselves do not decode
    except Exception:  # noqa: BLE001 - an EXIF block Pillow cannot rewrite (fuzzing finds them): turn by the tag
        return image.transpose(UPRIGHT_TRANSPOSE[orientation])


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
    if image.format in _REDUCED_DECODE_FORMATS:
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
