"""pipelines.metadata.png_chunks: a PNG's metadata chunks after its image data, read without decoding it."""

import io
import struct
import zlib

import pytest
from PIL import Image

from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata
from pipelines.metadata.png_chunks import MAX_TEXT_BYTES, info_without_decoding, late_chunks
from tests.unit.test_metadata import _camera_exif, _gradient

pytestmark = pytest.mark.unit
XMP = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator><rdf:Seq><rdf:li>Ada</rdf:li></rdf:Seq></dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>'  # noqa: E501


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with_late(*chunks: bytes) -> bytes:
    """A Pillow-written PNG with `chunks` moved between its image data and IEND (where Pillow reads them only as
    the image loads)."""
    buffer = io.BytesIO()
    _gradient().save(buffer, "PNG")
    data = buffer.getvalue()
    iend = data.rindex(b"IEND") - 4
    return data[:iend] + b"".join(chunks) + data[iend:]


def _exif_bytes() -> bytes:
    return _camera_exif().tobytes()


def test_late_exif_and_text_chunks_are_found_in_every_encoding() -> None:
    raw_profile = "\nexif\n" + f"{len(_exif_bytes()):8d}\n" + _exif_bytes().hex()
    data = _png_with_late(
        _chunk(b"eXIf", _exif_bytes()),
        _chunk(b"iTXt", b"XML:com.adobe.xmp\0\x01\0\0\0" + zlib.compress(XMP.encode())),
        _chunk(b"zTXt", b"Raw profile type exif\0\0" + zlib.compress(raw_profile.encode())),
        _chunk(b"tEXt", b"Comment\0not read"),
    )
    found = late_chunks(data)
    assert found == {"exif": _exif_bytes(), "XML:com.adobe.xmp": XMP, "Raw profile type exif": raw_profile}
    before = _png_with_late()  # chunks before the data are Pillow's to read at open
    assert late_chunks(before) == {}


def test_text_only_exif_is_converted_as_pillow_converts_it() -> None:
    raw_profile = "\nexif\n" + f"{len(_exif_bytes()):8d}\n" + _exif_bytes().hex()
    data = _png_with_late(_chunk(b"tEXt", b"Raw profile type exif\0" + raw_profile.encode()))
    with Image.open(io.BytesIO(data)) as image:
        info_without_decoding(image, data)
        assert image.getexif().get(0x010F) == "Canon"
        assert image._im is None  # nothing was decoded (Pillow 13 keeps the pixel core in _im)


@pytest.mark.parametrize(
    "damage",
    [
        _chunk(b"zTXt", b"XML:com.adobe.xmp\0\0" + zlib.compress(b" " * (MAX_TEXT_BYTES + 1))),  # inflates too far
        _chunk(b"zTXt", b"XML:com.adobe.xmp\0\0not zlib"),
        _chunk(b"iTXt", b"XML:com.adobe.xmp\0\x01\0no terminators"),
        _chunk(b"iTXt", b"XML:com.adobe.xmp\0"),
        struct.pack(">I", 1 << 30) + b"eXIf" + b"short",  # declares more than the file holds
    ],
    ids=["text-bomb", "bad-zlib", "itxt-cut", "itxt-empty", "chunk-past-end"],
)
def test_damaged_late_chunks_are_skipped_not_raised(damage: bytes) -> None:
    data = _png_with_late(damage)
    assert late_chunks(data) == {}
    meta = extract_metadata(data, DecodeLimits(max_full_decode_pixels=100))
    assert meta.image is not None and meta.exif is None and meta.xmp is None


def test_over_limit_png_reads_its_late_exif_and_xmp_without_decoding() -> None:
    data = _png_with_late(
        _chunk(b"eXIf", _exif_bytes()), _chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + XMP.encode())
    )
    with Image.open(io.BytesIO(data)) as image:
        info_without_decoding(image, data)
        assert image.getexif().get(0x010F) == "Canon" and image._im is None
    meta = extract_metadata(data, DecodeLimits(max_full_decode_pixels=100))
    assert meta.exif is not None and meta.exif.make == "Canon"
    assert meta.xmp is not None and meta.xmp.creators == ("Ada",)
    assert meta.colors is None and any(e.startswith("pixels: PNG image of 64x48 exceeds") for e in meta.errors)
    within = extract_metadata(data)  # within the limit Pillow loads the image and finds the same chunks itself
    assert within.exif is not None and within.exif.make == "Canon" and within.colors is not None
