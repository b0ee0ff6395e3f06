"""The metadata chunks a PNG carries after its image data, read from the chunk list without decoding a pixel.

Pillow reads the chunks before the first IDAT when it opens a PNG and the rest only as the image loads: its
`getexif()` decodes the whole image to reach an eXIf chunk that follows the data (~4 bytes a pixel, 400 MB at
100 MP). For PNGs over the full-decode pixel limit, whose pixels metadata never decodes, `info_without_decoding`
puts those late chunks into `Image.info` the way Pillow's own reader would, so that the readers never load it.
"""

import struct
import zlib

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_BYTES = 1 << 20  # an inflated text chunk, as Pillow's MAX_TEXT_CHUNK bounds it
MAX_CHUNKS = 100_000  # a walk's bound (~30 ms): a PNG of tiny IDAT chunks is no photo
RAW_EXIF_KEY = "Raw profile type exif"  # ImageMagick's hex-encoded EXIF in a text chunk
_TEXT_KEYS = frozenset({"XML:com.adobe.xmp", RAW_EXIF_KEY})  # the text the metadata readers look at


def _inflate(payload: bytes) -> bytes | None:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload, MAX_TEXT_BYTES)
    except zlib.error:
        return None
    return None if inflater.unconsumed_tail else text


def _text(kind: bytes, body: bytes) -> tuple[str, str] | None:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk that the readers use; None for others or damaged ones."""
    keyword, sep, rest = body.partition(b"\0")
    key = keyword.decode("latin-1")
    if not sep or key not in _TEXT_KEYS:
        return None
    if kind == b"tEXt":
        return key, rest.decode("latin-1")
    if kind == b"zTXt":
        text = _inflate(rest[1:]) if rest[:1] == b"\0" else None
        return (key, text.decode("latin-1")) if text is not None else None
    # iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text
    compressed, parts = rest[:1], rest[2:].split(b"\0", 2)
    if not compressed or len(parts) < 3:
        return None
    text = _inflate(parts[2]) if compressed != b"\0" else parts[2]
    return (key, text.decode("utf-8", "replace")) if text is not None else None


def late_chunks(data: bytes) -> dict[str, bytes | str]:
    """eXIf (as "exif") and the readers' text chunks that come after the first IDAT, keyed as Pillow's `info`."""
    found: dict[str, bytes | str] = {}
    position, after_data = len(PNG_SIGNATURE), False
    for _ in range(MAX_CHUNKS):
        if position + 8 > len(data):
            break
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if len(body) < length or kind == b"IEND":
            break
        if kind == b"IDAT":
            after_data = True
        elif after_data and kind == b"eXIf":
            found.setdefault("exif", body)
        elif after_data and kind in (b"tEXt", b"zTXt", b"iTXt"):
            text = _text(kind, body)
            if text is not None:
                found.setdefault(*text)
        position += 12 + length  # length, type, data, CRC
    return found


def info_without_decoding(image: Image.Image, data: bytes) -> None:
    """Fill `image.info` (a PNG opened from `data`, not loaded) with its late metadata chunks and an "exif" entry, so
    that `getexif()` reads what is there instead of loading the image. An eXIf chunk comes first, as in Pillow."""
    for key, value in late_chunks(data).items():
        image.info.setdefault(key, value)
    if "exif" not in image.info:
        raw = image.info.get(RAW_EXIF_KEY)
        try:  # Pillow's own conversion of the text form (Image.getexif)
            image.info["exif"] = bytes.fromhex("".join(str(raw).split("\n")[3:])) if raw else b""
        except ValueError:
            image.info["exif"] = b""
