"""Client bytes -> a validated, lazily opened Pillow image (header only), and what its header says about how it
stands: the one place every route opens client bytes (`open_validated`), with the format allow-list, byte and pixel
limits (`DecodeLimits`) checked before a pixel is decoded.

Kept apart from `pipelines.decode` (model tensors, the quality stage's working image) so that what only needs a
validated header, such as conversion and the `imgserve convert` command, does not load OpenCV, the quality metrics
and their configuration: ~40 MB of a bulk conversion process's memory (BENCHMARKS.md, "Conversion").
`pipelines.decode` re-exports these names.
"""

import io
import warnings
from functools import lru_cache

from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.errors import ImageTooLargeError, InvalidImageError, UnsupportedFormatError
from pipelines.jpeg_markers import check_header_markers, jpeg_scan_count, scan_limit
from pipelines.limits import DecodeLimits
from pipelines.orientation import SWAPS_AXES, UPRIGHT_TRANSPOSE
from pipelines.warning_capture import captured_warnings

# `DecodeLimits` governs image sizes: `open_validated` checks every image's size from its header before a pixel is
# decoded, and every open of client bytes goes through it. Pillow's own bomb check (an error at 2 x 89,478,485
# pixels, run inside `Image.open`) was a hidden cap under a larger IMGSERVE_MAX_PIXELS, answered in Pillow's words.
Image.MAX_IMAGE_PIXELS = None


@lru_cache(maxsize=1)
def register_heif() -> bool:
    """Teach Pillow HEIF/HEIC/AVIF through pillow-heif when it is installed (once per process; without it such files
    get 415). Done on the first ISO-BMFF file `open_validated` sees, by metadata extraction and by `pipelines.decode`
    on import: conversion of JPEGs never loads the plugin."""
    try:
        import pillow_heif
    except ImportError:  # pragma: no cover - depends on the optional 'heif' extra
        return False
    pillow_heif.register_heif_opener()
    return True


def _is_iso_bmff(data: bytes) -> bool:
    return data[4:8] == b"ftyp"  # HEIF / AVIF container


# Magic numbers of the formats we support: unidentifiable bytes that start like one of these are a
# corrupt image (400); anything else is not a supported image at all (415).
REDUCED_DECODE_FORMATS = frozenset({"JPEG", "MPO"})  # draft decode at 1/2..1/8 scale: no full-size buffer
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
    if _is_iso_bmff(data):
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
    elif _is_iso_bmff(data):
        register_heif()
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
    if image.format not in REDUCED_DECODE_FORMATS and width * height > limits.max_full_decode_pixels:
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


@lru_cache(maxsize=1)
def _pillow_turns_tiffs() -> bool:
    """Whether this Pillow turns TIFFs upright itself (the one in this project does): a TIFF's `size` is then its
    upright size from the header on, and `load()` turns the pixels in place and drops the orientation tag. Asked of
    Pillow once, with a 2x1 TIFF of orientation 6, rather than read from its version."""
    exif = Image.Exif()
    exif[0x0112] = 6
    probe = io.BytesIO()
    Image.new("L", (2, 1)).save(probe, "TIFF", exif=exif)
    with Image.open(probe) as tiff:
        return tiff.size == (1, 2)


def turned_by_pillow(image: Image.Image) -> bool:
    """Whether Pillow itself turns `image` (opened, not yet loaded) upright: a TIFF with an orientation tag, where
    this Pillow does (`_pillow_turns_tiffs`). Its `size` is the upright one already and its pixels come upright out
    of `load()`: turning it by the tag again turned it twice (metadata sizes, phash, the quality stage's size)."""
    if image.format != "TIFF" or getattr(image, "tag_v2", None) is None:
        return False
    return image.tag_v2.get(0x0112) in UPRIGHT_TRANSPOSE and _pillow_turns_tiffs()


def stored_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the pixels as the file stores them, before orientation (exiftool's File:ImageWidth)."""
    width, height = image.size
    return (height, width) if turned_by_pillow(image) and image.tag_v2.get(0x0112) in SWAPS_AXES else (width, height)


def upright_size(image: Image.Image, orientation: int) -> tuple[int, int]:
    """(width, height) as the viewer sees it, after EXIF orientation (`image` opened, not yet loaded)."""
    width, height = image.size
    if turned_by_pillow(image):
        return width, height
    return (height, width) if orientation in SWAPS_AXES else (width, height)


def upright_image(image: Image.Image, orientation: int) -> Image.Image:
    """The image turned upright by its EXIF orientation (`exif_orientation`; by the tag alone when Pillow cannot
    rewrite the EXIF). An image with nothing to turn is returned as it is: exif_transpose would copy it. One that
    Pillow turns as it loads it (`turned_by_pillow`) is only loaded: exif_transpose turned it a second time."""
    if orientation not in UPRIGHT_TRANSPOSE:
        return image
    if turned_by_pillow(image):
        image.load()
        return image
    try:
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, EOFError):
        raise  # the pixels themselves do not decode
    except Exception:  # noqa: BLE001 - an EXIF block Pillow cannot rewrite (fuzzing finds them): turn by the tag
        return image.transpose(UPRIGHT_TRANSPOSE[orientation])
