"""Output formats of the conversion stage: what each supports and which engine writes it.

libvips (pyvips) writes JPEG, PNG, WebP, TIFF, GIF and AVIF: it was measured faster and leaner than Pillow for
decode-resize-encode (BENCHMARKS.md, "Conversion libraries"). BMP has no libvips saver and HEIF (HEVC) no encoder
in the pyvips wheel: those two go through Pillow (HEIF with pillow-heif). AVIF and HEIF are listed only where
their encoder is installed (`available_formats`).
"""

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class OutputFormat:
    name: str  # the `format=` value
    content_type: str
    extension: str
    engine: str  # "vips" or "pillow"
    alpha: bool  # keeps an alpha channel (otherwise it is flattened onto `background`)
    animation: bool  # keeps several frames
    lossy: bool  # takes `quality`
    lossless_option: bool  # takes `lossless=true`
    high_bit_depth: bool  # keeps 16-bit samples (none yet: 16-bit inputs are written with 8 bits, scaled)
    options: tuple[str, ...]  # format-specific options beyond the common ones
    icc_profile: bool = True  # carries an ICC profile (`icc=keep`); BMP and GIF as written here do not


FORMATS: dict[str, OutputFormat] = {
    f.name: f
    for f in (
        OutputFormat(
            "jpeg", "image/jpeg", ".jpg", "vips", False, False, True, False, False,
            ("quality", "progressive", "optimize", "subsampling"),
        ),
        OutputFormat(
            "png", "image/png", ".png", "vips", True, False, False, True, False, ("compression", "progressive")
        ),
        OutputFormat(
            "webp", "image/webp", ".webp", "vips", True, True, True, True, False, ("quality", "lossless", "effort")
        ),
        OutputFormat(
            "tiff", "image/tiff", ".tiff", "vips", True, False, True, True, False, ("quality", "compression")
        ),
        # No alpha: a 32-bit BMP's fourth byte is "reserved" to readers (transparent areas showed black).
        OutputFormat("bmp", "image/bmp", ".bmp", "pillow", False, False, False, True, False, (), icc_profile=False),
        OutputFormat(
            "gif", "image/gif", ".gif", "vips", True, True, False, False, False, ("effort",), icc_profile=False
        ),
        OutputFormat(
            "avif", "image/avif", ".avif", "vips", True, False, True, True, False,
            ("quality", "lossless", "effort", "subsampling"),
        ),
        OutputFormat("heif", "image/heif", ".heic", "pillow", True, False, True, True, False, ("quality", "lossless")),
    )
}  # fmt: skip
ALIASES = {"jpg": "jpeg", "tif": "tiff", "heic": "heif"}
# Pillow format name of an input -> output format name, for "keep the input's format".
FROM_PILLOW = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff", "BMP": "bmp", "GIF": "gif"}
FROM_PILLOW |= {"AVIF": "avif", "HEIF": "heif"}
TIFF_COMPRESSION = ("none", "deflate", "lzw", "jpeg", "webp", "zstd", "packbits")
# The most pixels a side an encoder takes (WebP's 14-bit sizes; libheif's AV1 encoder here): a larger output is a 400
# naming the limit, not an encoder failure reported as an undecodable image.
MAX_OUTPUT_SIDE = {"webp": 16383, "avif": 16384}
# Encoders that take 20-100x JPEG's or WebP's time a pixel: their output is bounded by
# `DecodeLimits.max_slow_encode_pixels` (a 6300x6300 PNG to AVIF took 42 s, to GIF 26 s, to HEIF 19 s).
SLOW_ENCODERS = frozenset({"avif", "heif", "gif"})


@functools.cache
def encoder_missing(name: str) -> str | None:
    """Why format `name` cannot be written here (its encoder is not installed), or None."""
    if name == "avif":
        try:
            import pyvips

            pyvips.Image.black(8, 8, bands=3).heifsave_buffer(compression="av1", effort=0)
        except Exception as exc:  # noqa: BLE001 - any failure means no AV1 encoder
            return f"no AV1 encoder in this libvips ({type(exc).__name__})"
    if name == "heif":
        try:
            import pillow_heif

            if not pillow_heif.libheif_info().get("HEIF"):
                return "pillow-heif has no HEVC encoder"
        except ImportError:
            return "pillow-heif is not installed (pip install 'imgserve[heif]')"
    return None


@functools.cache
def tiff_compressions() -> tuple[str, ...]:
    """The TIFF compressions this libvips' libtiff writes (the pyvips wheel's has no zstd)."""
    import pyvips

    written = []
    for name in TIFF_COMPRESSION:
        try:
            pyvips.Image.black(8, 8, bands=3).tiffsave_buffer(compression=name)
            written.append(name)
        except pyvips.Error:
            pass
    return tuple(written)


def available_formats() -> list[OutputFormat]:
    return [f for f in FORMATS.values() if encoder_missing(f.name) is None]
