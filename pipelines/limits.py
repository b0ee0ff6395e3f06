"""Bounds on what the decoder accepts, so hostile input cannot exhaust a replica."""

from dataclasses import dataclass, field

# Pillow format names. MPO is the multi-picture JPEG many cameras write; it decodes as JPEG.
DEFAULT_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP", "GIF", "HEIF", "AVIF"})


@dataclass(frozen=True)
class DecodeLimits:
    """Decode-time limits; the defaults admit 100 MP camera files and reject decompression bombs."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 100_000_000
    # Formats other than JPEG decode at full size (JPEG decodes at 1/2..1/8 scale for the models): at 4 bytes a
    # pixel, 40 MP is ~160 MB per request, where 100 MP of solid colour fits in a ~300 KB PNG.
    max_full_decode_pixels: int = 40_000_000
    formats: frozenset[str] = field(default=DEFAULT_FORMATS)
