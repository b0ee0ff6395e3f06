"""Bounds on what the decoder accepts, so hostile input cannot exhaust a replica."""

from dataclasses import dataclass, field

# Pillow format names. MPO is the multi-picture JPEG many cameras write; it decodes as JPEG.
DEFAULT_FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP", "GIF", "HEIF", "AVIF"})


@dataclass(frozen=True)
class DecodeLimits:
    """Decode-time limits; the defaults admit 100 MP camera files and reject decompression bombs."""

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 100_000_000
    # Formats other than JPEG decode at full size (JPEG decodes at 1/2..1/8 scale for the models), where 100 MP of
    # solid colour fits in a ~300 KB PNG. A full-size decode peaks at ~7 bytes a pixel (the decoder's 4-byte buffer
    # and one HxWx3 array: `pipelines.full_size`), 8 for WebP (libwebp's buffers) and EXIF-turned TIFF (Pillow turns
    # it as it loads): measured at 40 MP, ~280 MB per request, ~305 MB for an RGBA WebP.
    max_full_decode_pixels: int = 40_000_000
    # Output pixels (times frames) of the slow encoders (`pipelines.convert.formats.SLOW_ENCODERS`: AVIF, HEIF, GIF
    # take 20-100x JPEG's time a pixel; 40 MP took 19-42 s of CPU and ~1 GB), as image proxies cap them.
    max_slow_encode_pixels: int = 16_000_000
    # Enhancement holds several float32 copies of the image (Lab conversions): 25 MP took 5 s and 1.1 GB for two
    # operations. 16 MP still enhances a 4608x3456 photo at full size.
    max_enhance_pixels: int = 16_000_000
    formats: frozenset[str] = field(default=DEFAULT_FORMATS)
