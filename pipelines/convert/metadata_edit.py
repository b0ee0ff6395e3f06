"""Metadata of an output image: kept, stripped, or anonymised (no GPS, no personal fields).

Anonymising edits the EXIF block itself (Pillow's EXIF writer): the GPS directory, the tags that name a person
or a device serial, free-text comments and the maker note are removed; XMP, IPTC and PNG text chunks are dropped
whole (any can repeat the location and the names).
libvips mirrors EXIF tags as `exif-ifdN-*` fields and writes them back over the blob when saving, so the
mirrored fields of removed tags are removed too.
"""

import struct

import pyvips
from PIL import Image

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
PIXEL_X_DIMENSION, PIXEL_Y_DIMENSION = 0xA002, 0xA003
_SHORT, _LONG = 3, 4
PERSONAL_TAGS = {
    0x013B: "Artist",
    0x8298: "Copyright",
    0xA430: "CameraOwnerName",
    0xA431: "BodySerialNumber",
    0xA435: "LensSerialNumber",
    0xA420: "ImageUniqueID",
    0x9C9D: "XPAuthor",
    # free text and the maker's private block (serial numbers, owner names, some makers' locations)
    0x927C: "MakerNote",
    0x9286: "UserComment",
    0x9C9C: "XPComment",
}
# libvips ForeignKeep flags
KEEP_NONE, KEEP_EXIF, KEEP_XMP, KEEP_IPTC, KEEP_ICC, KEEP_OTHER = 0, 1, 2, 4, 8, 16
KEEP_ALL = KEEP_EXIF | KEEP_XMP | KEEP_IPTC | KEEP_ICC | KEEP_OTHER


def anonymized_exif(blob: bytes) -> bytes | None:
    """The EXIF block without GPS and personal tags; None when it cannot be parsed (then it is dropped whole)."""
    try:
        exif = Image.Exif()
        exif.load(blob[6:] if blob.startswith(b"Exif\x00\x00") else blob)
        exif.get_ifd(EXIF_IFD)  # load the sub-IFD so its personal tags can be removed
        exif.pop(GPS_IFD, None)
        exif._ifds.pop(GPS_IFD, None)  # noqa: SLF001 - Pillow keeps loaded sub-IFDs here and writes them back
        for tag in PERSONAL_TAGS:
            exif.pop(tag, None)
            exif.get_ifd(EXIF_IFD).pop(tag, None)
        return b"Exif\x00\x00" + exif.tobytes()
    except Exception:  # noqa: BLE001 - a broken EXIF block is dropped rather than copied
        return None


def anonymize_vips(image: pyvips.Image) -> pyvips.Image:
    """A copy of `image` whose metadata carries no location or personal fields."""
    out = image.copy()
    for name in out.get_fields():
        # PNG text chunks (png-comment-N-Author, -Comment, ...) are free text, as XMP and IPTC are
        if name in ("xmp-data", "iptc-data") or name.startswith(("exif-ifd3-", "png-comment-")):
            out.remove(name)
        elif name.startswith("exif-") and any(f"-{tag_name}" in name for tag_name in PERSONAL_TAGS.values()):
            out.remove(name)
    if "exif-data" in out.get_fields():
        blob = anonymized_exif(out.get("exif-data"))
        if blob is None:
            out.remove("exif-data")
        else:
            out.set_type(pyvips.GValue.blob_type, "exif-data", blob)
    return out


def keep_flags(metadata: str, icc: str) -> int:
    """libvips `keep=` for the options: metadata keep/strip; the ICC profile kept only with icc=keep (after
    conversion to sRGB the profile says nothing a viewer does not assume)."""
    flags = KEEP_ALL & ~KEEP_ICC if metadata == "keep" else KEEP_NONE
    return flags | (KEEP_ICC if icc == "keep" else 0)


def _entries(tiff: bytes, order: str, offset: int) -> dict[int, int]:
    """tag -> offset of its 12-byte entry in the IFD at `offset`."""
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    return {struct.unpack_from(order + "H", tiff, offset + 2 + 12 * i)[0]: offset + 2 + 12 * i for i in range(count)}


def exif_with_size(blob: bytes, width: int, height: int) -> bytes:
    """The EXIF block with PixelXDimension/PixelYDimension saying the output's size, as libvips' savers write them
    (an enlarged or shrunk photo otherwise claims its camera's size). Patched in place, so nothing else in the block
    moves (maker notes keep their offsets); unchanged where the block has no such tags or cannot be read."""
    start = 6 if blob.startswith(b"Exif\x00\x00") else 0
    tiff = bytearray(blob[start:])
    try:
        order = {b"II": "<", b"MM": ">"}[bytes(tiff[:2])]
        ifd0 = _entries(tiff, order, struct.unpack_from(order + "I", tiff, 4)[0])
        if EXIF_IFD not in ifd0:
            return blob
        exif_ifd = _entries(tiff, order, struct.unpack_from(order + "I", tiff, ifd0[EXIF_IFD] + 8)[0])
        for tag, value in ((PIXEL_X_DIMENSION, width), (PIXEL_Y_DIMENSION, height)):
            entry = exif_ifd.get(tag)
            if entry is None:
                continue
            kind, count = struct.unpack_from(order + "HI", tiff, entry + 2)
            if count != 1 or kind not in (_SHORT, _LONG):
                continue
            if kind == _SHORT and value <= 0xFFFF:
                struct.pack_into(order + "HH", tiff, entry + 8, value, 0)
            else:
                struct.pack_into(order + "HII", tiff, entry + 2, _LONG, 1, value)
    except (KeyError, struct.error):
        return blob
    return blob[:start] + bytes(tiff)
