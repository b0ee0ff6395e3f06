"""`extract_metadata`: raw bytes -> `ImageMetadata`, one guarded section at a time."""

import dataclasses
import hashlib
import sys
from collections.abc import Callable
from typing import TypeVar

from PIL import Image

from pipelines.errors import ImageInputError, InvalidImageError
from pipelines.image_header import REDUCED_DECODE_FORMATS, open_validated, register_heif
from pipelines.limits import DecodeLimits
from pipelines.metadata.camera_facts import complete_camera_facts
from pipelines.metadata.colors import color_info
from pipelines.metadata.container import is_heif, mime_type, read_image_info
from pipelines.metadata.exif import read_exif
from pipelines.metadata.gps import read_gps
from pipelines.metadata.iptc import read_iptc
from pipelines.metadata.phash import phash
from pipelines.metadata.plausible import plausible_metadata
from pipelines.metadata.png_chunks import info_without_decoding
from pipelines.metadata.result import ColorInfo, FileInfo, ImageMetadata
from pipelines.metadata.thumbnail import Thumbnail, upright_thumbnail
from pipelines.metadata.xmp import read_xmp
from pipelines.warning_capture import captured_warnings

T = TypeVar("T")
MAX_MESSAGE_CHARS = 300
PIXEL_FIELDS_WITHHELD = "phash and colors not computed"


def _message(section: str, text: str) -> str:
    text = " ".join(str(text).split())
    return f"{section}: {text[:MAX_MESSAGE_CHARS]}"


def _guarded(section: str, errors: list[str], read: Callable[[], tuple[T | None, list[str]]]) -> T | None:
    """Run one section reader; its exceptions and warnings become messages in `errors`, never propagate."""
    with captured_warnings() as caught:
        try:
            value, problems = read()
        except Exception as exc:  # noqa: BLE001 - hostile input must cost one section, not the request
            value, problems = None, [_message(section, f"{type(exc).__name__}: {exc}")]
    errors.extend(problems)
    for warning in caught:
        message = _message(section, f"warning: {warning.message}")
        if message not in errors:
            errors.append(message)
    return value


def open_header(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Open `data` lazily with every limit but the pixel ones (bytes, format, header damage): pixel limits gate
    only the thumbnail decode (`_pixels_withheld`), and the headers of huge images are still safe to read."""
    return open_validated(data, dataclasses.replace(limits, max_pixels=sys.maxsize, max_full_decode_pixels=sys.maxsize))


def _pixels_withheld(image: Image.Image, limits: DecodeLimits) -> str | None:
    """Why the thumbnail is not decoded, where a decoder would refuse the image's pixels: the same two limits."""
    width, height = image.size
    if width * height > limits.max_pixels:
        return f"pixels: {width}x{height} exceeds {limits.max_pixels} pixels; not decoded"
    if image.format not in REDUCED_DECODE_FORMATS and width * height > limits.max_full_decode_pixels:
        return (
            f"pixels: {image.format} image of {width}x{height} exceeds the {limits.max_full_decode_pixels} pixels of"
            f" formats decoded at full size; not decoded, {PIXEL_FIELDS_WITHHELD}"
        )
    return None


def extract_metadata(data: bytes, limits: DecodeLimits | None = None, colors: bool = True) -> ImageMetadata:
    """Read file, image, EXIF, GPS, XMP, IPTC and (optionally) colour facts from encoded image bytes.

    Never raises for bad input: whatever cannot be read is None and explained in `errors`. The only pixels
    decoded are one thumbnail of at most 128 px (JPEG at reduced DCT scale), skipped beyond the decoders' pixel
    limits (`limits.max_pixels`; `limits.max_full_decode_pixels` for formats other than JPEG).
    """
    limits = limits or DecodeLimits()
    errors: list[str] = []
    size, digest = len(data), hashlib.sha256(data).hexdigest()
    register_heif()
    with captured_warnings() as caught:
        try:
            image = open_header(data, limits)
        except ImageInputError as exc:
            return ImageMetadata(file=FileInfo(size_bytes=size, sha256=digest), errors=(_message("file", str(exc)),))
        except Exception as exc:  # noqa: BLE001 - e.g. a plugin failing in an unexpected way on hostile bytes
            message = _message("file", f"unreadable: {type(exc).__name__}: {exc}")
            return ImageMetadata(file=FileInfo(size_bytes=size, sha256=digest), errors=(message,))
    errors += [_message("file", f"warning: {w.message}") for w in caught]
    try:
        withheld = _pixels_withheld(image, limits)
        if withheld and image.format == "PNG":
            info_without_decoding(image, data)  # or Pillow's getexif() decodes it all to reach a late eXIf chunk
        info = _guarded("image", errors, lambda: (read_image_info(image, data, errors), []))
        exif = _guarded("exif", errors, lambda: read_exif(image))
        gps = _guarded("gps", errors, lambda: read_gps(image))
        xmp = _guarded("xmp", errors, lambda: read_xmp(image))
        iptc = _guarded("iptc", errors, lambda: read_iptc(image))
        completed = _guarded("camera_facts", errors, lambda: (complete_camera_facts(image, exif, xmp), []))
        exif = completed if completed is not None else exif
        thumb = None
        if withheld:
            errors.append(withheld)
        else:
            orientation = info.orientation if info else None
            thumb = _guarded("pixels", errors, lambda: _thumbnail(image, data, orientation, errors))
        hashed = _guarded("phash", errors, lambda: (phash(thumb.image), [])) if thumb else None
        stats = _guarded("colors", errors, lambda: _colors(thumb)) if thumb and colors else None
        file = FileInfo(size_bytes=size, sha256=digest, format=image.format, mime=mime_type(image), phash=hashed)
    finally:
        image.close()
    # Whatever block a value came from: finite numbers, an ISO and dates that fit, no control characters.
    return plausible_metadata(
        ImageMetadata(file=file, image=info, exif=exif, gps=gps, xmp=xmp, iptc=iptc, colors=stats, errors=tuple(errors))
    )


def _thumbnail(
    image: Image.Image, data: bytes, orientation: int | None, errors: list[str]
) -> tuple[Thumbnail | None, list[str]]:
    """The thumbnail, or none where the JPEG data is damaged: libjpeg would fill what it lost with grey, and the
    phash and colours of grey are not the photo's. Said in the decoders' words (their 400 `invalid_image`)."""
    try:
        return upright_thumbnail(image, data, orientation, is_heif(image), errors), []
    except InvalidImageError as exc:
        return None, [_message("pixels", f"{exc}; {PIXEL_FIELDS_WITHHELD}")]


def _colors(thumb: Thumbnail) -> tuple[ColorInfo, list[str]]:
    return color_info(thumb.image, srgb=thumb.srgb), []
