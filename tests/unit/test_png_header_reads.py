"""A PNG's orientation is read from its header, never by decoding it, and the chunks after its image data are not
walked by the analysis decode (`pipelines.decode.exif_orientation`, `without_png_trailer`)."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from pipelines.convert import ConvertOptions, convert_image
from pipelines.decode import decode_image, exif_orientation, open_validated
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec

pytestmark = pytest.mark.unit
LIMITS = DecodeLimits()
AS_IS = PreprocessSpec(resize_policy="none", crop_size=None, dtype="uint8")


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def plain_png(size: tuple[int, int] = (40, 20)) -> bytes:
    rgb = np.zeros((size[1], size[0], 3), np.uint8)
    rgb[:, : size[0] // 2] = (250, 40, 10)  # left half red: where it ends up shows the turn
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "PNG")
    return out.getvalue()


def exif_chunk(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()
    return chunk(b"eXIf", body[6:] if body.startswith(b"Exif\x00\x00") else body)


def inserted(data: bytes, extra: bytes, before: bytes) -> bytes:
    at = data.index(before) - 4
    return data[:at] + extra + data[at:]


def test_orientation_is_read_without_decoding_the_png(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's PNG getexif() loads the image (and parses every chunk after it) when no eXIf came before IDAT."""
    loads: list[object] = []
    original = PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: loads.append(self) or original(self))
    header = open_validated(plain_png(), LIMITS)
    assert exif_orientation(header) == 1
    assert exif_orientation(open_validated(inserted(plain_png(), exif_chunk(6), b"IDAT"), LIMITS)) == 6
    assert loads == []


def test_an_exif_chunk_after_the_image_data_is_not_honoured_as_libvips_does() -> None:
    """The PNG specification puts eXIf before IDAT; libvips (conversion) and browsers ignore one after it. The analysis
    decode turned such an image (Pillow reads it after loading) while conversion did not."""
    after = inserted(plain_png(), exif_chunk(6), b"IEND")
    assert exif_orientation(open_validated(after, LIMITS)) == 1
    working = decode_image(after, AS_IS, LIMITS, working_max_side=64).working
    converted = Image.open(io.BytesIO(convert_image(after, ConvertOptions.parse(format="png"), LIMITS).data))
    assert working is not None and working.shape[:2] == (20, 40)
    assert converted.size == (40, 20)
    before = inserted(plain_png(), exif_chunk(6), b"IDAT")  # honoured by both, as before
    turned = decode_image(before, AS_IS, LIMITS, working_max_side=64).working
    assert turned is not None and turned.shape[:2] == (40, 20)
    assert Image.open(io.BytesIO(convert_image(before, ConvertOptions.parse(format="png"), LIMITS).data)).size == (
        20,
        40,
    )


def test_the_analysis_decode_does_not_walk_a_long_trailer(monkeypatch: pytest.MonkeyPatch) -> None:
    data = plain_png()
    trailer = b"".join(chunk(b"tEXt", b"k\x00%d" % i) for i in range(8000))  # ~150 KB of tiny text chunks
    padded = inserted(data, trailer, b"IEND")
    parsed: list[bytes] = []
    original = PngImagePlugin.PngStream.chunk_tEXt
    monkeypatch.setattr(
        PngImagePlugin.PngStream,
        "chunk_tEXt",
        lambda self, pos, length: parsed.append(b"") or original(self, pos, length),
    )
    decoded = decode_image(padded, AS_IS, LIMITS, working_max_side=64)
    assert len(parsed) < 10
    expected = decode_image(data, AS_IS, LIMITS, working_max_side=64)
    assert np.array_equal(decoded.tensor, expected.tensor)
    assert decoded.working is not None and expected.working is not None
    assert np.array_equal(decoded.working, expected.working)


def test_a_short_trailer_and_a_truncated_png_decode_as_before() -> None:
    data = inserted(plain_png(), chunk(b"tEXt", b"Comment\x00after the pixels"), b"IEND")
    assert np.array_equal(decode_image(data, AS_IS, LIMITS).tensor, decode_image(plain_png(), AS_IS, LIMITS).tensor)
