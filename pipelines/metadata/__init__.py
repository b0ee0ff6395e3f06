"""Image metadata from raw bytes: file, image, EXIF, GPS, XMP, IPTC and colour facts as frozen dataclasses.

Pillow reads the container, EXIF/GPS (`Image.getexif`) and IPTC; pillow-heif adds HEIF/HEIC; XMP is parsed
with a bounded standard-library parser. Only one small thumbnail is ever decoded (perceptual hash, colours).
Field names and units: `pipelines.metadata.result` and docs/METADATA.md.
"""

from pipelines.metadata.extract import extract_metadata
from pipelines.metadata.phash import hamming_distance
from pipelines.metadata.result import (
    AlphaStats,
    ColorInfo,
    ExifInfo,
    FileInfo,
    GpsInfo,
    ImageInfo,
    ImageMetadata,
    IptcInfo,
    Swatch,
    XmpInfo,
)

__all__ = [
    "AlphaStats",
    "ColorInfo",
    "ExifInfo",
    "FileInfo",
    "GpsInfo",
    "ImageInfo",
    "ImageMetadata",
    "IptcInfo",
    "Swatch",
    "XmpInfo",
    "extract_metadata",
    "hamming_distance",
]
