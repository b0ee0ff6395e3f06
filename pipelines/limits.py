"""Bounds on what the decoder accepts, so hostile input cannot exhaust a replica."""

from dataclasses import dataclass, field

# Pillow format names. MPO is the multi-picture JPEG many cameras write; it decodes as JPEG.
DEFAULT_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP", "GIF", "HEIF", "AVIF"})


@dataclass(frozen=True)
class DecodeLimits:
    """Decode-time limits; the defaults admit 100 MP camera files and reject decompression bombs."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 100_000_000
    formats: frozenset[str] = field(default=DEFAULT_FORMATS)
