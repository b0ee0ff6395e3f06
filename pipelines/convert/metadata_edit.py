"""Metadata of an output image: kept, stripped, or anonymised (no GPS, no personal fields).

Anonymising edits the EXIF block itself (Pillow's EXIF writer): the GPS directory, the tags that name a person,
a device serial or a computer, free text and the maker note are removed; the EXIF thumbnail (IFD1) goes whole, as
Pillow's writer never copies it (it is a JPEG of its own, with its own EXIF: GPS, artist). XMP, IPTC and PNG text
chunks are dropped whole (any can repeat the location and the names).
libvips mirrors EXIF tags as `exif-ifdN-*` fields and the thumbnail as `jpeg-thumbnail-data`, and writes them back
over the blob when saving, so the mirrored fields of removed tags are removed too.

`PERSONAL_TAGS` is the one list of EXIF tags anonymisation removes. The metadata answer
(`pipelines.metadata.anonymize`) reads none of them, so it has no EXIF field to blank
(`tests/unit/test_convert_anonymize_exif.py` keeps the two apart).
"""

import struct

import pyvips
from PIL import Image

GPS_IFD = 0x8825
EXIF_IFD = 0x8769
PIXEL_X_DIMENSION, PIXEL_Y_DIMENSION = 0xA002, 0xA003
_SHORT, _LONG = 3, 4
EXIF_HEADER = b"Exif\x00\x00"  # the APP1 identifier libvips keeps at the start of its EXIF blobs
# libvips' field of the EXIF thumbnail (IFD1's JPEG) and the prefix of its mirrored IFD1 tags
THUMBNAIL_FIELD, THUMBNAIL_TAG_FIELDS = "jpeg-thumbnail-data", "exif-ifd1-"
# tag -> its name in libvips' `exif-ifdN-<name>` fields (libexif's names), for IFD0 and the Exif IFD
PERSONAL_TAGS = {
    # a person
    0x013B: "Artist",
    0x8298: "Copyright",
    0xA430: "CameraOwnerName",
    0xA437: "Photographer",  # EXIF 3.0
    0xA438: "ImageEditor",  # EXIF 3.0
    0x9C9D: "XPAuthor",
    # a device or a computer
    0xA431: "BodySerialNumber",
    0xA435: "LensSerialNumber",
    0xC62F: "CameraSerialNumber",  # DNG's, written by exiftool and some raw converters into IFD0
    0x013C: "HostComputer",
    0xA420: "ImageUniqueID",
    # free text (names, addresses) and the maker's private block (serial numbers, owner names, some locations)
    0x010D: "DocumentName",
    0x010E: "ImageDescription",
    0xA436: "ImageTitle",  # EXIF 3.0
    0x9C9B: "XPTitle",
    0x9C9C: "XPComment",
    0x9C9E: "XPKeywords",
    0x9C9F: "XPSubject",
    0x927C: "MakerNote",
    0x9286: "UserComment",
}
_PERSONAL_NAMES = frozenset(PERSONAL_TAGS.values())
# libvips ForeignKeep flags
KEEP_NONE, KEEP_EXIF, KEEP_XMP, KEEP_IPTC, KEEP_ICC, KEEP_OTHER = 0, 1, 2, 4, 8, 16
KEEP_ALL = KEEP_EXIF | KEEP_XMP | KEEP_IPTC | KEEP_ICC | KEEP_OTHER


def exif_of_block(blob: bytes) -> Image.Exif:
    """An EXIF blob, with or without libvips' `Exif\0\0` header, read by Pillow (`exif_block` writes it back);
    raises what Pillow raises on a block it cannot read."""
    exif = Image.Exif()
    exif.load(blob[len(EXIF_HEADER) :] if blob.startswith(EXIF_HEADER) else blob)
    return exif


def exif_block(exif: Image.Exif) -> bytes:
    """`exif` written as libvips keeps EXIF blobs: one `Exif\\0\\0` header, then the TIFF structure. Pillow's
    `tobytes()` writes the header itself; the WebP writer (`pipelines.convert.libwebp`) and Pillow's HEIF writer copy
    the blob as it is, so a second header made the block unreadable to exiftool and libvips."""
    data = exif.tobytes()
    return data if data.startswith(EXIF_HEADER) else EXIF_HEADER + data


def anonymized_exif(blob: bytes) -> bytes | None:
    """The EXIF block without GPS, personal tags and the thumbnail (IFD1, which Pillow's writer leaves out); None
    when it cannot be parsed (then it is dropped whole)."""
    try:
        exif = exif_of_block(blob)
        exif.get_ifd(EXIF_IFD)  # load the sub-IFD so its personal tags can be removed
        exif.pop(GPS_IFD, None)
        exif._ifds.pop(GPS_IFD, None)  # noqa: SLF001 - Pillow keeps loaded sub-IFDs here and writes them back
        for tag in PERSONAL_TAGS:
            exif.pop(tag, None)
            exif.get_ifd(EXIF_IFD).pop(tag, None)
        return exif_block(exif)
    except Exception:  # noqa: BLE001 - a broken EXIF block is dropped rather than copied
        return None


def _personal_field(name: str) -> bool:
    """Whether anonymisation removes libvips' metadata field `name`: XMP, IPTC and PNG text chunks
    (png-comment-N-Author, -Comment, ...: free text), the GPS directory (`exif-ifd3-*`), the EXIF thumbnail and its
    IFD1 tags (libvips writes the thumbnail back from its field, whatever the blob holds), and personal tags."""
    if name in ("xmp-data", "iptc-data", THUMBNAIL_FIELD):
        return True
    if name.startswith(("exif-ifd3-", THUMBNAIL_TAG_FIELDS, "png-comment-")):
        return True
    parts = name.split("-", 2)  # exif-ifd0-Artist
    return len(parts) == 3 and parts[0] == "exif" and parts[2] in _PERSONAL_NAMES


def anonymize_vips(image: pyvips.Image) -> pyvips.Image:
    """A copy of `image` whose metadata carries no location or personal fields."""
    out = image.copy()
    for name in out.get_fields():
        if _personal_field(name):
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
    start = len(EXIF_HEADER) if blob.startswith(EXIF_HEADER) else 0
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
