"""A few XMP properties from the image's main XMP packet, parsed with a bounded, DTD-free ElementTree.

Pillow hands us the packet (`Image.info["xmp"]`, PNG iTXt, TIFF tag 700, pillow-heif); Pillow's own
`getxmp()` needs `defusedxml`, which the project does not otherwise depend on, so the packet is parsed here
with the standard library after refusing any DOCTYPE/ENTITY (the entity-expansion attacks) and anything
larger than `MAX_XMP_BYTES`.
"""

import math
import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

from PIL import Image

from pipelines.metadata.result import XmpInfo

MAX_XMP_BYTES = 1024 * 1024  # a JPEG APP1 packet is <= 64 KiB; larger ones are TIFF/PNG outliers or hostile

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XMP = "http://ns.adobe.com/xap/1.0/"
DC = "http://purl.org/dc/elements/1.1/"
EXIF = "http://ns.adobe.com/exif/1.0/"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_FORBIDDEN = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def xmp_packet(image: Image.Image) -> bytes | None:
    """The raw XMP packet the container carries, if any."""
    for key in ("xmp", "XML:com.adobe.xmp"):
        value = image.info.get(key)
        if value:
            return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    tags = getattr(image, "tag_v2", None)  # TIFF: XMP tag 700
    if tags is not None and 700 in tags:
        value = tags[700]
        return value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return None


def _values(element: ET.Element) -> list[str]:
    """Text of a simple property, or of the rdf:li items of a Bag/Seq/Alt (x-default first)."""
    items = element.findall(f"{{{RDF}}}*/{{{RDF}}}li")
    if not items:
        value = (element.text or "").strip()
        return [value] if value else []
    items.sort(key=lambda li: li.get(XML_LANG) != "x-default")
    return [text for li in items if (text := (li.text or "").strip())]


def _properties(root: ET.Element) -> dict[str, list[str]]:
    """First occurrence of every property, as '{namespace}Name' -> values, from attributes and elements."""
    found: dict[str, list[str]] = {}
    for description in root.iter(f"{{{RDF}}}Description"):
        for name, value in description.attrib.items():
            if value.strip():
                found.setdefault(name, [value.strip()])
        for child in description:
            values = _values(child)
            if values:
                found.setdefault(child.tag, values)
    return found


def xmp_datetime(value: str | None) -> tuple[str | None, str | None]:
    """(ISO 8601, error) from an XMP date-time; a date without a time of day is not a capture time (None)."""
    if value is None or "T" not in value:
        return None, None
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        return None, f"not an XMP date-time: {value[:40]!r}"
    offset = stamp.utcoffset()
    if offset is not None and offset.total_seconds() % 60:  # XMP's are ±HH:MM; Python also reads seconds, micros
        return None, f"offset of {value[:60]!r} is not whole minutes"
    return stamp.isoformat(), None


def parse_xmp(packet: bytes) -> tuple[XmpInfo | None, list[str]]:
    """`XmpInfo` from one packet (None when it has none of our properties); errors say what was refused."""
    if len(packet) > MAX_XMP_BYTES:
        return None, [f"xmp: packet of {len(packet)} bytes exceeds the {MAX_XMP_BYTES}-byte limit; not parsed"]
    if _FORBIDDEN.search(packet):
        return None, ["xmp: packet declares a DTD or entities; refused"]
    start, end = packet.find(b"<"), packet.rfind(b">")
    if start < 0 or end < start:
        return None, ["xmp: packet has no XML"]
    try:
        root = ET.fromstring(packet[start : end + 1])
    except ET.ParseError as exc:
        return None, [f"xmp: not well-formed XML: {exc}"]
    props = _properties(root)
    errors: list[str] = []

    def one(name: str) -> str | None:
        values = props.get(name)
        return values[0] if values else None

    rating: Any = one(f"{{{XMP}}}Rating")
    if rating is not None:
        try:
            rating = float(rating)
        except ValueError:
            errors.append(f"xmp.rating: not a number: {rating[:40]!r}")
            rating = None
        if rating is not None and not math.isfinite(rating):  # "NaN", "Infinity", "1e999": not JSON
            errors.append(f"xmp.rating: not a finite number: {rating}")
            rating = None
    taken, error = xmp_datetime(one(f"{{{EXIF}}}DateTimeOriginal"))
    if error:
        errors.append(f"xmp.datetime_original: {error}")
    info = XmpInfo(
        rating=rating,
        label=one(f"{{{XMP}}}Label"),
        creator_tool=one(f"{{{XMP}}}CreatorTool"),
        keywords=tuple(props.get(f"{{{DC}}}subject", ())),
        creators=tuple(props.get(f"{{{DC}}}creator", ())),
        title=one(f"{{{DC}}}title"),
        description=one(f"{{{DC}}}description"),
        datetime_original=taken,
    )
    return (None if info == XmpInfo() else info), errors


def read_xmp(image: Image.Image) -> tuple[XmpInfo | None, list[str]]:
    """`XmpInfo` from the image's packet; (None, []) when it has none."""
    packet = xmp_packet(image)
    return (None, []) if packet is None else parse_xmp(packet)
