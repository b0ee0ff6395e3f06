"""Options of a conversion, parsed and checked once (unknown or out-of-range values -> `InvalidOptionError`, 400).

The same options come from query parameters (`/v1/convert?format=webp&quality=80`), gRPC fields, batch-job stage
options and the CLI, so parsing accepts strings as well as typed values.
"""

from dataclasses import dataclass, fields, replace
from typing import Any

from pipelines.convert.formats import (
    ALIASES,
    FORMATS,
    FROM_PILLOW,
    TIFF_COMPRESSION,
    encoder_missing,
    tiff_compressions,
)
from pipelines.errors import InvalidOptionError

MAX_TARGET_SIDE = 16384
# Defaults where the client does not say: the encoders' usual quality, and WebP effort 2. WebP's encoder spends
# most of a conversion's time; effort 2 instead of libwebp's default 4 encoded the camera mix at 2048 px 2.5x faster
# (106 vs 261 ms a photo) for files 4 % larger at 0.2 dB lower PSNR (BENCHMARKS.md, "Conversion"). `effort=4` is
# libwebp's default back.
DEFAULT_QUALITY = {"jpeg": 85, "webp": 80, "tiff": 85, "avif": 50, "heif": 80}
DEFAULT_EFFORT = {"webp": 2, "gif": 7, "avif": 4}
EFFORT_RANGE = {"webp": (0, 6), "gif": (1, 10), "avif": (0, 9)}
SUBSAMPLING = {"auto": "auto", "on": "on", "420": "on", "4:2:0": "on", "off": "off", "444": "off", "4:4:4": "off"}
# the spellings HTTP's typed query parameters take (pydantic's), so gRPC's text options read alike
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise InvalidOptionError(f"{name}={value!r}: expected true or false")


def _int(name: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        raise InvalidOptionError(f"{name}={value!r}: expected an integer from {low} to {high}") from None
    if not low <= number <= high:
        raise InvalidOptionError(f"{name}={number} is out of range: {low}..{high}")
    return number


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise InvalidOptionError(f"{name}={value!r}: choose one of {', '.join(choices)}")
    return text


def parse_format(value: Any) -> str:
    text = ALIASES.get(str(value).strip().lower(), str(value).strip().lower())
    if text not in FORMATS:
        raise InvalidOptionError(f"format={value!r} is not supported; output formats: {', '.join(FORMATS)}")
    missing = encoder_missing(text)
    if missing:
        raise InvalidOptionError(f"format={text} is not available on this server: {missing}")
    return text


def parse_colour(value: Any) -> tuple[int, int, int]:
    text = str(value).strip().lstrip("#").lower()
    if len(text) == 3:
        text = "".join(c * 2 for c in text)
    if len(text) != 6 or any(c not in "0123456789abcdef" for c in text):
        raise InvalidOptionError(f"background={value!r}: expected a hex colour such as ffffff or #000")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


@dataclass(frozen=True)
class ConvertOptions:
    """What to write. `format` None keeps the input's format (JPEG for formats that cannot be written)."""

    format: str | None = None
    quality: int | None = None  # 1-100, lossy formats; None: DEFAULT_QUALITY
    lossless: bool = False  # webp, avif, heif (tiff/png/bmp/gif are lossless anyway)
    progressive: bool = False  # jpeg progressive, png interlaced
    optimize: bool = False  # jpeg: optimised Huffman tables
    effort: int | None = None  # webp 0-6, gif 1-10, avif 0-9; None: DEFAULT_EFFORT
    subsampling: str = "auto"  # chroma subsampling of jpeg/avif: auto, on (4:2:0), off (4:4:4)
    compression: str | None = None  # png: zlib level 0-9; tiff: none, deflate, lzw, jpeg, webp, zstd, packbits
    max_side: int | None = None  # fit inside max_side x max_side
    width: int | None = None  # fit to this width (and height, if both)
    height: int | None = None
    upscale: bool = False  # enlarge when the target is larger than the image
    icc: str = "srgb"  # srgb: convert to sRGB; keep: leave the pixels and the embedded profile as they are
    metadata: str = "keep"  # keep or strip EXIF/XMP/IPTC (the ICC profile follows `icc`)
    anonymize: bool = False  # drop GPS and personal EXIF/XMP/IPTC fields from kept metadata
    background: tuple[int, int, int] = (255, 255, 255)  # alpha is flattened onto this for formats without alpha
    animated: bool = True  # keep the frames of an animated GIF/WebP when the output format can

    @classmethod
    def parse(cls, /, **raw: Any) -> "ConvertOptions":
        """From query parameters or JSON values; None (or "") means not given. Raises `InvalidOptionError`, for a
        name that is no option whatever its value (None too: `{"bogus": null}` is refused as `?bogus=` is)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in raw if k not in known)
        if unknown:
            raise InvalidOptionError(f"unknown conversion options {unknown}; known: {', '.join(sorted(known))}")
        given = {k: v for k, v in raw.items() if v is not None and v != ""}
        values: dict[str, Any] = {}
        fmt = parse_format(given["format"]) if "format" in given else None
        values["format"] = fmt
        if "quality" in given:
            values["quality"] = _int("quality", given["quality"], 1, 100)
        for name in ("lossless", "progressive", "optimize", "upscale", "anonymize", "animated"):
            if name in given:
                values[name] = _bool(name, given[name])
        if "effort" in given:
            low, high = EFFORT_RANGE.get(fmt or "", (0, 10))
            values["effort"] = _int("effort", given["effort"], low, high)
        if "subsampling" in given:
            values["subsampling"] = SUBSAMPLING[_choice("subsampling", given["subsampling"], tuple(SUBSAMPLING))]
        if "compression" in given:
            text = str(given["compression"]).strip().lower()
            if fmt == "tiff":
                values["compression"] = _choice("compression", text, TIFF_COMPRESSION)
                if values["compression"] not in tiff_compressions():
                    raise InvalidOptionError(
                        f"compression={text} is not available on this server (its libtiff does not write it); "
                        f"available: {', '.join(tiff_compressions())}"
                    )
            elif fmt == "png":
                values["compression"] = str(_int("compression", text, 0, 9))
            else:
                raise InvalidOptionError("compression= applies to format=png (0-9) or format=tiff only")
        for name in ("max_side", "width", "height"):
            if name in given:
                values[name] = _int(name, given[name], 1, MAX_TARGET_SIDE)
        if "icc" in given:
            values["icc"] = _choice("icc", given["icc"], ("srgb", "keep"))
        if "metadata" in given:
            values["metadata"] = _choice("metadata", given["metadata"], ("keep", "strip"))
        if "background" in given:
            values["background"] = (
                given["background"] if isinstance(given["background"], tuple) else parse_colour(given["background"])
            )
        options = cls(**values)
        options.check_against_format()
        return options

    def check_against_format(self) -> None:
        """Options that the chosen format cannot honour are an error, not silently ignored."""
        if self.format is None:
            return
        spec = FORMATS[self.format]
        if self.quality is not None and not spec.lossy and not (self.format == "tiff"):
            raise InvalidOptionError(f"quality= does not apply to format={self.format} (it is lossless)")
        if self.lossless and not spec.lossless_option:
            raise InvalidOptionError(f"lossless=true is not available for format={self.format}")
        if self.lossless and self.quality is not None:
            raise InvalidOptionError("give either lossless=true or quality=, not both")
        if self.effort is not None and self.format not in EFFORT_RANGE:
            raise InvalidOptionError(f"effort= does not apply to format={self.format}")
        if self.effort is not None and not EFFORT_RANGE[self.format][0] <= self.effort <= EFFORT_RANGE[self.format][1]:
            low, high = EFFORT_RANGE[self.format]
            raise InvalidOptionError(f"effort={self.effort} is out of range for format={self.format}: {low}..{high}")
        if self.lossless and self.format == "tiff" and self.compression in ("jpeg", "webp"):
            raise InvalidOptionError(f"lossless=true contradicts compression={self.compression} (lossy)")
        if self.quality is not None and self.format == "tiff" and self.compression not in ("jpeg", "webp"):
            raise InvalidOptionError(
                f"quality= applies to format=tiff with compression=jpeg or webp, not {self.compression or 'deflate'}"
            )
        if self.lossless and self.subsampling != "auto":
            raise InvalidOptionError("subsampling= does not apply to lossless=true (it keeps full chroma)")
        if self.optimize and self.format != "jpeg":
            raise InvalidOptionError("optimize= applies to format=jpeg only")
        if self.progressive and self.format not in ("jpeg", "png"):
            raise InvalidOptionError("progressive= applies to format=jpeg or format=png only")
        if self.subsampling != "auto" and self.format not in ("jpeg", "avif"):
            raise InvalidOptionError("subsampling= applies to format=jpeg or format=avif only")
        if self.icc == "keep" and not spec.icc_profile:
            carriers = ", ".join(name for name, f in FORMATS.items() if f.icc_profile)
            raise InvalidOptionError(
                f"icc=keep: format={self.format} cannot carry a colour profile, so its pixels would be shown as sRGB;"
                f" ask for icc=srgb (converted to sRGB) or one of {carriers}"
            )

    def resolved(self, input_format: str) -> "ConvertOptions":
        """With `format` filled in from the input's Pillow format name when it was not given."""
        if self.format is not None:
            return self
        fmt = FROM_PILLOW.get(input_format, "jpeg")
        fmt = fmt if encoder_missing(fmt) is None else "jpeg"
        options = replace(self, format=fmt)
        options.check_against_format()
        return options
