"""The typed result of `extract_metadata`: stable field names, units in the names or documented here.

Every field that the file does not state is ``None`` (or an empty tuple); nothing is guessed. A section is
``None`` when the file has no such block at all (no EXIF, no GPS IFD, no XMP packet, no IPTC record) or when
it could not be read, in which case `ImageMetadata.errors` says why.
"""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class FileInfo:
    """The container as bytes."""

    size_bytes: int
    sha256: str  # hex digest of the exact bytes received
    format: str | None = None  # Pillow format name: JPEG, MPO, PNG, TIFF, WEBP, GIF, BMP, HEIF, AVIF
    mime: str | None = None  # e.g. image/jpeg (MPO is served as image/jpeg, as exiftool reports it)
    phash: str | None = None  # 64-bit DCT perceptual hash of the upright image, 16 hex digits (imagehash.phash)


@dataclass(frozen=True)
class ImageInfo:
    """The main image, read from the header (no pixel decode)."""

    width: int  # pixels as stored, before orientation (exiftool File:ImageWidth; HEIF: the coded `ispe` size)
    height: int
    upright_width: int  # pixels as displayed, after EXIF orientation / HEIF irot
    upright_height: int
    mode: str  # Pillow mode of the decoded main image: RGB, RGBA, L, P, CMYK, I;16, ...
    bands: int  # number of channels in `mode`
    bit_depth: int | None  # bits per sample as stored (PNG/TIFF header, HEIF bitstream); None when unknown
    frames: int  # images in the file (GIF/APNG/WebP frames, TIFF pages, MPO pictures, HEIF top-level images)
    animated: bool  # True only for GIF, APNG, WebP and AVIF with more than one frame
    has_alpha: bool  # an alpha channel or a transparent palette/colour key
    icc_profile: str | None  # description of the embedded ICC profile
    orientation: int | None  # 1..8 as declared by EXIF (XMP tiff:Orientation when EXIF has none); None if absent


@dataclass(frozen=True)
class ExifInfo:
    """Camera EXIF (IFD0 + Exif IFD). Enumerations use the EXIF 2.32 names in snake_case."""

    make: str | None = None
    model: str | None = None
    lens_make: str | None = None
    lens_model: str | None = None
    software: str | None = None
    datetime_original: str | None = None  # ISO 8601, local time; with .fraction and ±HH:MM when the file has them
    exposure_time_s: float | None = None  # seconds
    f_number: float | None = None
    iso: int | None = None  # PhotographicSensitivity (first value when several)
    focal_length_mm: float | None = None
    focal_length_35mm_equiv_mm: int | None = None
    flash: int | None = None  # raw EXIF Flash bit field
    flash_fired: bool | None = None  # bit 0 of `flash`
    white_balance: str | None = None  # auto | manual
    metering_mode: str | None = None  # unknown | average | center_weighted_average | spot | multi_spot | ...
    exposure_program: str | None = None  # manual | normal | aperture_priority | shutter_priority | ...
    exposure_mode: str | None = None  # auto | manual | auto_bracket
    exposure_bias_ev: float | None = None  # EV
    # Camera facts that standard EXIF lacks, read from another block: field name -> where, e.g.
    # {"iso": "canon_makernote"}. Sources: canon/casio/olympus/reconyx_makernote, canon_ciff (APP0),
    # olympus_picture_info (APP12), xmp. Empty when every value above is standard EXIF.
    sources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GpsInfo:
    """The EXIF GPS IFD, in signed decimal units."""

    latitude_deg: float | None = None  # signed decimal degrees, north positive
    longitude_deg: float | None = None  # signed decimal degrees, east positive
    altitude_m: float | None = None  # metres, negative below sea level
    timestamp_utc: str | None = None  # ISO 8601 UTC from GPSDateStamp + GPSTimeStamp, e.g. 2021-04-11T20:47:52Z
    img_direction_deg: float | None = None  # direction the camera pointed, 0..360
    img_direction_ref: str | None = None  # true | magnetic


@dataclass(frozen=True)
class XmpInfo:
    """A few XMP properties (xmp:, dc:) from the main XMP packet; extended XMP is not read."""

    rating: float | None = None  # xmp:Rating, -1 (rejected) or 0..5
    label: str | None = None  # xmp:Label
    creator_tool: str | None = None  # xmp:CreatorTool
    keywords: tuple[str, ...] = ()  # dc:subject
    creators: tuple[str, ...] = ()  # dc:creator
    title: str | None = None  # dc:title (x-default)
    description: str | None = None  # dc:description (x-default)
    datetime_original: str | None = None  # exif:DateTimeOriginal, ISO 8601 (offset kept when stated)


@dataclass(frozen=True)
class IptcInfo:
    """IPTC-IIM application record (2:xx) as read by Pillow's IptcImagePlugin."""

    object_name: str | None = None  # 2:05
    headline: str | None = None  # 2:105
    caption: str | None = None  # 2:120
    keywords: tuple[str, ...] = ()  # 2:25
    by_line: tuple[str, ...] = ()  # 2:80, the creators
    credit: str | None = None  # 2:110
    copyright_notice: str | None = None  # 2:116
    city: str | None = None  # 2:90
    country: str | None = None  # 2:101


@dataclass(frozen=True)
class Swatch:
    """One colour: sRGB 0..255 and the share of visible pixels it stands for."""

    rgb: tuple[int, int, int]
    hex: str  # "#rrggbb"
    fraction: float  # 0..1 of the visible (alpha >= 128) thumbnail pixels


@dataclass(frozen=True)
class AlphaStats:
    """Transparency of an image with alpha, over the thumbnail."""

    transparent_fraction: float  # alpha == 0
    translucent_fraction: float  # 0 < alpha < 255
    mean_alpha: float  # 0..1


@dataclass(frozen=True)
class ColorInfo:
    """Colour statistics of the upright image, computed on a thumbnail of at most 128x128 pixels."""

    dominant: Swatch | None  # the largest palette entry; None when no pixel is visible
    palette: tuple[Swatch, ...]  # up to 8 colours (k-means), largest first
    mean_rgb: tuple[int, int, int] | None
    mean_hex: str | None
    colorfulness: float | None  # Hasler & Suesstrunk (2003) M on the 0..255 scale; ~0 grey, >100 very colourful
    alpha: AlphaStats | None  # None for images without alpha
    srgb: bool  # True when the values are sRGB (no ICC profile, or converted from the embedded profile)
    sample_size: tuple[int, int]  # (width, height) of the thumbnail the statistics come from


@dataclass(frozen=True)
class ImageMetadata:
    """Everything `extract_metadata` read from one file, plus per-section error messages."""

    file: FileInfo
    image: ImageInfo | None = None
    exif: ExifInfo | None = None
    gps: GpsInfo | None = None
    xmp: XmpInfo | None = None
    iptc: IptcInfo | None = None
    colors: ColorInfo | None = None
    errors: tuple[str, ...] = ()  # "section[.field]: message" for each problem; empty when all went well

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return asdict(self)
