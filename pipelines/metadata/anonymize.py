"""Anonymised metadata: what `anonymize=true` (or a tenant that forces it) leaves of an `ImageMetadata` dict.

Dropped: the whole GPS block (where the photo was taken), and every field naming a person or a place —
XMP creators, IPTC by-line, credit, copyright notice, city and country. The EXIF fields imgserve reads name
no person and carry no serial number (make, model, lens and exposure settings stay: they describe the camera
type, not its owner): the personal EXIF tags that conversion's `anonymize=true` removes from an output's EXIF
block (`pipelines.convert.metadata_edit.PERSONAL_TAGS`, the one list of them) are none that this answer reports.
`anonymized: true` marks the result so a reader knows fields were removed.
"""

import copy
from typing import Any

PERSONAL_FIELDS = {
    "xmp": {"creators": [], "description": None, "title": None},
    "iptc": {"by_line": [], "credit": None, "copyright_notice": None, "city": None, "country": None, "caption": None},
}


def anonymize_metadata(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` (ImageMetadata.to_dict()) without location and personal fields."""
    out = copy.deepcopy(document)
    out["gps"] = None
    for section, fields in PERSONAL_FIELDS.items():
        block = out.get(section)
        if isinstance(block, dict):
            block.update(copy.deepcopy(fields))
    out["errors"] = [e for e in out.get("errors") or [] if not str(e).startswith("gps")]
    out["anonymized"] = True
    return out
