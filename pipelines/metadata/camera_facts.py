"""Complete the camera facts that standard EXIF lacks from maker notes, legacy JPEG blocks and XMP.

Standard EXIF always wins: a value is taken from elsewhere only when EXIF does not state that field, and
`ExifInfo.sources` records where it came from. (ExifTool prefers some maker-note values over standard ones,
e.g. Kodak's measured 1/32.1 s over EXIF's nominal 1/30 s; imgserve keeps what the standard block says.)
"""

import dataclasses
from typing import Any

from PIL import Image

from pipelines.metadata.legacy_blocks import read_legacy_blocks
from pipelines.metadata.makernotes import read_maker_note
from pipelines.metadata.result import ExifInfo, XmpInfo

CAMERA_FIELDS = (
    "make",
    "model",
    "lens_model",
    "datetime_original",
    "exposure_time_s",
    "f_number",
    "iso",
    "focal_length_mm",
)


def complete_camera_facts(image: Image.Image, exif: ExifInfo | None, xmp: XmpInfo | None) -> ExifInfo | None:
    """`exif` with its missing camera facts filled from the other blocks of the file (unchanged if none)."""
    missing = {name for name in CAMERA_FIELDS if exif is None or getattr(exif, name) is None}
    if not missing:
        return exif
    found: dict[str, tuple[Any, str]] = {}

    def offer(facts: dict[str, Any], source: str | None) -> None:
        for name, value in facts.items():
            if source and name in missing and value is not None:
                found.setdefault(name, (value, source))

    block = image.info.get("exif")
    if isinstance(block, bytes | bytearray):
        offer(*read_maker_note(bytes(block), exif.make if exif else None))
    applist = getattr(image, "applist", None)
    if applist:
        offer(*read_legacy_blocks(applist))
    if xmp is not None:
        offer({"datetime_original": xmp.datetime_original}, "xmp")
    if not found:
        return exif
    base = exif or ExifInfo()
    values = {name: value for name, (value, _) in found.items()}
    sources = {**base.sources, **{name: source for name, (_, source) in found.items()}}
    return dataclasses.replace(base, **values, sources=sources)
